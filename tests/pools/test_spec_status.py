"""A spec's status (pools/selectors.py): a disabled spec drains, with what holds each EIP back; "misconfigured"
is only for a real misconfiguration; the plan of a disabled spec's pass lists its coming releases."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from pools import selectors
from pools.models import Cluster, LaunchSpec, Node
from tests.fixtures.web import WebWorld, assign, make_eip, make_node
from tests.pools.plans import store_plan_as_a_pass

pytestmark = pytest.mark.django_db


@pytest.fixture
def draining_world(web_world: WebWorld) -> WebWorld:
    """web_world, configured right (a kube context), holding four EIPs, each on a node in another situation:
    node-a runs (not draining), node-c drains with 3 workload pods, node-d has drained (0 pods), node-e's
    instance is stopped."""
    Cluster.objects.filter(pk=web_world.cluster.pk).update(kube_context="prod")
    spec = web_world.spec
    for index, name, extra in (
        (4, "node-c", {"state": Node.State.DRAINING, "draining": True, "drain_reason": "cordoned", "workload_pods": 3}),
        (5, "node-d", {"state": Node.State.DRAINING, "draining": True, "drain_reason": "cluster-autoscaler",
                       "workload_pods": 0}),
        (6, "node-e", {"state": Node.State.STOPPED, "instance_state": "stopped"}),
    ):
        node = make_node(name, spec=spec, index=index, **extra)
        assign(make_eip(index), node)
    return web_world


def _disable(client: Client, name: str) -> None:
    response = client.post(reverse("launch-spec-disable", args=[name]))
    assert response.status_code == 302
    assert LaunchSpec.objects.get(name=name).enabled is False


def test_a_disabled_spec_that_holds_eips_is_draining_not_misconfigured(
    operator_client: Client, draining_world: WebWorld
) -> None:
    _disable(operator_client, "egress")
    store_plan_as_a_pass(draining_world.spec)  # the disabled spec's next pass: its drain, EIP by EIP
    stats = selectors.pool_stats_get(spec=LaunchSpec.objects.get(name="egress"))
    assert selectors.spec_problem_list(stats=[stats]) == []
    assert stats.status == "draining"

    html = operator_client.get(reverse("launch-spec-detail", args=["egress"])).content.decode()
    assert "Misconfigured" not in html and 'id="spec-problems"' not in html
    assert "while the spec is misconfigured" not in html
    assert 'data-status="draining"' in html
    assert "4 EIPs left" in html
    # What holds each EIP back, in the planner's words.
    assert "203.0.113.1 on node-a: the node runs and is not draining" in html
    assert "203.0.113.4 on node-c: 3 workload pods still run" in html
    assert ("203.0.113.5 on node-d: the last pass releases it (drained (cluster-autoscaler): no workload pods left)"
            in html)
    assert "203.0.113.6 on node-e: its instance is stopped" in html


def test_the_plan_of_a_disabled_spec_lists_the_coming_releases(
    operator_client: Client, draining_world: WebWorld
) -> None:
    _disable(operator_client, "egress")
    # No pass has planned it yet: the page plans nothing on its own. Then its pass stores its plan and drain.
    preview = selectors.plan_preview(spec=LaunchSpec.objects.get(name="egress"))
    assert preview.drain == [] and not preview.planned
    planned = store_plan_as_a_pass(draining_world.spec)
    preview = selectors.plan_preview(spec=LaunchSpec.objects.get(name="egress"))
    assert preview.lines == planned.describe() and not preview.outdated
    assert [hold.public_ip for hold in preview.drain] == ["203.0.113.1", "203.0.113.4", "203.0.113.5", "203.0.113.6"]
    assert [hold.next_pass for hold in preview.drain] == [False, False, True, False]

    html = operator_client.get(reverse("launch-spec-detail", args=["egress"])).content.decode()
    plan = html.split("Plan of the last pass", 1)[1].split("</section>", 1)[0]
    assert "release 203.0.113.5 from node-d (drained (cluster-autoscaler): no workload pods left)" in plan
    assert 'id="plan-drain"' in plan
    assert "203.0.113.4 from node-c once its 3 workload pods are gone" in plan
    assert "203.0.113.1 from node-a once the node drains or its instance ends" in plan
    assert "203.0.113.6 from node-e once its instance is terminated or the node deleted" in plan


def test_a_drained_spec_is_drained_and_says_it_can_be_deleted(operator_client: Client, web_world: WebWorld) -> None:
    Cluster.objects.filter(pk=web_world.cluster.pk).update(kube_context="prod")
    for assignment in web_world.assignments:
        assignment.closed_at = assignment.opened_at
        assignment.save()
    _disable(operator_client, "egress")
    assert selectors.pool_stats_get(spec=LaunchSpec.objects.get(name="egress")).status == "drained"
    html = operator_client.get(reverse("launch-spec-detail", args=["egress"])).content.decode()
    assert 'data-status="drained"' in html and "Drained." in html and "Misconfigured" not in html


def test_the_overview_tile_of_a_draining_spec_says_draining_with_the_eips_left(
    operator_client: Client, draining_world: WebWorld
) -> None:
    _disable(operator_client, "egress")
    html = operator_client.get(reverse("overview")).content.decode()
    tile = html.split('<article class="tile', 1)[1].split("</article>", 1)[0]
    assert 'data-status="draining"' in tile
    assert "draining · 4 EIPs left" in tile
    assert "misconfigured" not in tile
    assert 'id="problems"' not in html  # a deliberate drain needs no attention


def test_a_real_misconfiguration_still_says_misconfigured(operator_client: Client, web_world: WebWorld) -> None:
    """web_world's cluster has no kube context, and an empty pool is added: both misconfigurations."""
    LaunchSpec.objects.create(name="typo", cluster=web_world.cluster, labels={"role": "typo"},
                              tag_key="eipdash/pool", tag_value="no-such-pool")
    stats = selectors.pool_stats_list()
    assert {row.spec.name: row.status for row in stats} == {"egress": "misconfigured", "typo": "misconfigured"}
    html = operator_client.get(reverse("launch-spec-detail", args=["typo"])).content.decode()
    assert 'id="spec-problems"' in html and "Misconfigured." in html
    assert 'data-problem="empty_pool"' in html and 'id="plan-blocked"' in html


def test_metrics_say_misconfigured_only_for_a_misconfiguration(viewer_client: Client, draining_world: WebWorld
                                                               ) -> None:
    """/metrics: one series per spec and problem code, however many alerts share the code; an exhausted pool
    or a conflict is a problem, not a misconfiguration; a draining spec is neither."""
    cluster = draining_world.cluster
    LaunchSpec.objects.filter(name="egress").update(enabled=False)
    sftp = LaunchSpec.objects.create(name="sftp", cluster=cluster, labels={"role": "sftp"}, tag_key="eipdash/pool",
                                     tag_value="sftp", active_alerts=["pool_exhausted", "node-foreign-eip:x",
                                                                      "node-two-specs:y"])
    assign(make_eip(40, tags={"eipdash/pool": "sftp"}), make_node("sftp-1", spec=sftp, index=40))
    make_node("sftp-2", spec=sftp, index=41, state=Node.State.WAITING)
    body = viewer_client.get("/metrics").content.decode()
    assert 'eipdash_launch_spec_misconfigured{launch_spec="sftp"} 0.0' in body
    assert 'eipdash_launch_spec_misconfigured{launch_spec="egress"} 0.0' in body
    assert 'eipdash_launch_spec_problem{launch_spec="sftp",problem="pool_exhausted"} 1.0' in body
    assert body.count('eipdash_launch_spec_problem{launch_spec="sftp",problem="conflict"}') == 1
    assert 'launch_spec="egress",problem=' not in body
