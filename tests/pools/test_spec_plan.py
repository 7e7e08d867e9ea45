"""The spec page's plan: the one its latest pass stored (services.spec_plan_store), read by
selectors.plan_preview with its age; never planned again on a request. The passes that store it are tested in
tests/workers/test_executor.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools import planner, selectors, services, snapshot
from pools.locks import Lease, LeaseLost, lease_key
from pools.models import Cluster, LaunchSpec, Node, SpecPlan
from pools.planner import Plan
from tests.fixtures.web import WebWorld
from tests.pools.plans import store_plan_as_a_pass

pytestmark = pytest.mark.django_db

PLAN_API = "/api/v1/launch-specs/egress/plan"  # the API answers a dashboard session too


@pytest.fixture
def served(web_world: WebWorld) -> WebWorld:
    """web_world, configured right (a kube context, a recent pass), its nodes carrying the spec's labels: node-b
    waits for the free 203.0.113.2, so the plan has work in it."""
    Cluster.objects.filter(pk=web_world.cluster.pk).update(kube_context="prod")
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(last_successful_pass_at=timezone.now())
    Node.objects.update(labels=web_world.spec.labels)
    return web_world


def refuse_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, any call of the planner or of its inputs' reader fails the test: a request must not plan."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request ran the planner")

    monkeypatch.setattr(planner, "plan", refuse)
    monkeypatch.setattr(snapshot, "planner_inputs", refuse)
    # Should the selectors ever import them by name again, the patch reaches those names too.
    monkeypatch.setattr(selectors, "plan_pass", refuse, raising=False)
    monkeypatch.setattr(selectors, "planner_inputs", refuse, raising=False)


def _page(client: Client, name: str = "egress") -> str:
    response = client.get(reverse("launch-spec-detail", args=[name]))
    assert response.status_code == 200
    return response.content.decode()


def _plan_section(html: str) -> str:
    return html.split('id="plan"', 1)[1].split("</section>", 1)[0]


def test_the_page_and_the_api_show_the_stored_plan_and_its_age_without_planning(
    viewer_client: Client, served: WebWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned_at = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=12)
    stored = store_plan_as_a_pass(served.spec, planned_at=planned_at)
    assert "assign 203.0.113.2 → node-b" in stored.describe()  # node-b waits for the free EIP
    refuse_planning(monkeypatch)

    preview = selectors.plan_preview(spec=served.spec)
    assert preview.lines == stored.describe() and preview.planned_at == planned_at and not preview.error
    assert not preview.stale and not preview.outdated

    section = _plan_section(_page(viewer_client))
    assert [line for line in stored.describe() if line not in section] == []
    stamp = f'<time datetime="{planned_at:%Y-%m-%dT%H:%M:%SZ}">{planned_at:%H:%M:%S} UTC</time>'
    assert f"Plan of the pass at {stamp}, " in section
    assert "12s ago" in section or "13s ago" in section  # the page's second may have turned
    assert 'id="plan-stale"' not in section and 'id="plan-none"' not in section

    body = viewer_client.get(PLAN_API).json()
    assert body["lines"] == stored.describe() and body["error"] == "" and body["launchSpec"] == "egress"
    assert dt.datetime.fromisoformat(body["plannedAt"]) == planned_at


def test_a_spec_no_pass_has_planned_says_so_plainly(
    viewer_client: Client, served: WebWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_planning(monkeypatch)
    preview = selectors.plan_preview(spec=served.spec)
    assert preview.lines == [] and preview.planned_at is None and not preview.planned and not preview.error

    section = _plan_section(_page(viewer_client))
    assert 'id="plan-none"' in section and "No pass has planned this spec yet." in section
    assert 'id="plan-age"' not in section and "Nothing to do" not in section

    assert viewer_client.get(PLAN_API).json() == {
        "launchSpec": "egress", "lines": [], "error": "", "plannedAt": None}


def test_a_plan_older_than_a_few_passes_is_marked_stale(viewer_client: Client, served: WebWorld,
                                                        settings: Any) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    store_plan_as_a_pass(served.spec, planned_at=timezone.now() - dt.timedelta(seconds=16))
    assert selectors.plan_preview(spec=served.spec).stale
    section = _plan_section(_page(viewer_client))
    assert 'id="plan-stale"' in section and "older than 15s" in section and "16s ago" in section

    store_plan_as_a_pass(served.spec, planned_at=timezone.now() - dt.timedelta(seconds=14))
    assert not selectors.plan_preview(spec=served.spec).stale
    assert 'id="plan-stale"' not in _plan_section(_page(viewer_client))


def test_a_drained_spec_has_no_passes_and_its_old_plan_is_not_called_stale(
    viewer_client: Client, web_world: WebWorld
) -> None:
    for assignment in web_world.assignments:
        assignment.closed_at = assignment.opened_at
        assignment.save()
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(enabled=False)
    store_plan_as_a_pass(web_world.spec, planned_at=timezone.now() - dt.timedelta(hours=2))
    section = _plan_section(_page(viewer_client))
    assert "2h 00m ago" in section and 'id="plan-stale"' not in section
    assert "Disabled and drained: no pass runs for this spec." in section


def test_a_plan_made_before_the_spec_changed_says_its_next_pass_plans_anew(
    operator_client: Client, web_world: WebWorld
) -> None:
    store_plan_as_a_pass(web_world.spec)
    assert 'id="plan-outdated"' not in _plan_section(_page(operator_client))
    assert operator_client.post(reverse("launch-spec-disable", args=["egress"])).status_code == 302
    assert selectors.plan_preview(spec=LaunchSpec.objects.get(name="egress")).outdated
    assert 'id="plan-outdated"' in _plan_section(_page(operator_client))
    store_plan_as_a_pass(web_world.spec)  # the next pass: planned for the spec as it is now
    assert not selectors.plan_preview(spec=LaunchSpec.objects.get(name="egress")).outdated


def test_each_pass_writes_over_the_one_row_of_its_spec(served: WebWorld) -> None:
    first = store_plan_as_a_pass(served.spec, fence=1)
    assert any("node-b" in line for line in first.describe())
    served.nodes[1].delete()  # node-b is gone: the next plan no longer assigns it anything
    second = store_plan_as_a_pass(served.spec, fence=2)
    assert SpecPlan.objects.count() == 1
    assert selectors.plan_preview(spec=served.spec).lines == second.describe()
    assert not any("node-b" in line for line in second.describe())
    assert SpecPlan.objects.get().fence == 2


def test_a_plan_of_a_lower_fencing_number_never_replaces_a_newer_one(web_world: WebWorld) -> None:
    newer = store_plan_as_a_pass(web_world.spec, fence=7)
    spec = LaunchSpec.objects.select_related("cluster").get(pk=web_world.spec.pk)
    assert not services.spec_plan_store(spec=spec, plan=Plan(), eips=[], nodes=[], claims={}, fence=6)
    row = SpecPlan.objects.get()
    assert (row.lines, row.fence) == (newer.describe(), 7)
    assert services.spec_plan_store(spec=spec, plan=Plan(), eips=[], nodes=[], claims={}, fence=8)
    assert SpecPlan.objects.get().lines == ["nothing to do"]


def test_a_holder_that_lost_the_spec_cannot_store_its_plan(web_world: WebWorld) -> None:
    """The pass's fenced transaction (Lease.fenced) refuses the write once a newer holder took the spec."""
    key = lease_key(web_world.spec.pk)
    stale = Lease(key, seconds=10, url=None, spec_id=web_world.spec.pk)
    newer = Lease(key, seconds=10, url=None, spec_id=web_world.spec.pk)
    assert stale.acquire() and newer.acquire() and newer.fence > stale.fence
    kept = store_plan_as_a_pass(web_world.spec, fence=newer.fence)
    spec = LaunchSpec.objects.select_related("cluster").get(pk=web_world.spec.pk)
    with pytest.raises(LeaseLost), stale.fenced():
        services.spec_plan_store(spec=spec, plan=Plan(), eips=[], nodes=[], claims={}, fence=stale.fence)
    assert SpecPlan.objects.get().lines == kept.describe()


def test_a_stored_plan_that_cannot_be_read_is_said_and_the_page_still_answers(
    viewer_client: Client, web_world: WebWorld
) -> None:
    store_plan_as_a_pass(web_world.spec)
    with transaction.atomic():
        SpecPlan.objects.update(drain=[{"public_ip": "203.0.113.9"}])  # no allocation id, node, why: damaged
    preview = selectors.plan_preview(spec=web_world.spec)
    assert preview.error.startswith("The stored plan could not be read") and preview.lines == []
    assert "The stored plan could not be read" in _plan_section(_page(viewer_client))
