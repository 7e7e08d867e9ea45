"""The node page (pools/views_node.py, /nodes/<cluster>/<name>/): why the node is where it is, at the top, in
words; its facts, its timeline from first seen, where its Kubernetes Events can be read; the reader rule; a
gone node; and the links to it from every page that names a node."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools.models import Event, LaunchSpec, Node
from tests.fixtures.web import PASSWORD, WebWorld, assign, make_eip, make_node, record
from tests.pools.plans import store_plan_as_a_pass
from tests.pools.test_spec_plan import refuse_planning

pytestmark = pytest.mark.django_db

LABELS = {"eks.amazonaws.com/nodegroup": "egress"}


@pytest.fixture
def night(web_world: WebWorld) -> WebWorld:
    """web_world with its nodes labelled for the spec and its last free EIP taken: node-b waits on an empty pool,
    and the pass that found it so recorded a pool_exhausted event naming it."""
    Node.objects.filter(cluster=web_world.cluster).update(labels=LABELS)
    third = make_node("node-c", spec=web_world.spec, index=3, state=Node.State.READY, labels=LABELS,
                      eip_ready_at=timezone.now() - dt.timedelta(minutes=8))
    assign(web_world.eips[1], third)
    waiting = Node.objects.get(name="node-b")
    record(Event.Kind.POOL_EXHAUSTED, spec=web_world.spec, at=waiting.first_seen_at + dt.timedelta(seconds=2),
           reason="1 node needs an EIP and the pool has 0 free (2 in the pool); waiting: node-b")
    # Another spec's exhaustion, and one of this spec that lists another node only: neither is node-b's.
    record(Event.Kind.POOL_EXHAUSTED, spec=web_world.spec, at=waiting.first_seen_at + dt.timedelta(seconds=3),
           reason="1 node needs an EIP and the pool has 0 free (2 in the pool); waiting: node-b2")
    return web_world


def _url(name: str, cluster: str = "prod") -> str:
    return reverse("node-detail", args=[cluster, name])


def _text(html: str) -> str:
    """The page's words, tags dropped and spaces folded, as a reader sees them."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _reason(html: str) -> str:
    found = re.search(r'<p[^>]*id="node-reason"[^>]*>(.*?)</p>', html, re.S)
    assert found, "the page states its reason at the top"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1))).strip()


def test_a_waiting_node_says_why_at_the_top_then_its_facts_timeline_and_kube_events(
        viewer_client: Client, night: WebWorld) -> None:
    response = viewer_client.get(_url("node-b"))
    assert response.status_code == 200
    html = response.content.decode()
    reason = _reason(html)
    assert reason.startswith("waiting: the pool of egress has 0 free of 2 (since ")
    # At the top: before the facts and the timeline.
    assert html.index('id="node-reason"') < html.index('id="node-facts"') < html.index('id="node-timeline"')
    text = _text(html)
    for fact in ("i-00000000000000002", "us-east-1a", "eni-00000000000000002", "10.0.0.2",
                 "eipdash.io/eip-pending:NoSchedule", "no pod lands before its EIP"):
        assert fact in text, fact
    assert f'href="{reverse("launch-spec-detail", args=["egress"])}"' in html
    timeline = html[html.index('id="node-timeline"'):]
    # It waits from its first sighting on; the pass 2 s later recorded the exhaustion naming it.
    assert [what for what in re.findall(r'data-what="([^"]+)"', timeline)] == [
        "registered", "waiting", "pool exhausted"]
    assert "waiting: node-b2" not in timeline
    # The web reads no Kubernetes: it says so, and gives the command that does.
    assert ("kubectl get events -n default --field-selector=involvedObject.kind=Node,involvedObject.name=node-b"
            in text)
    assert "EIPPoolExhausted" in text and "no Kubernetes credentials" in text


def test_a_ready_node_links_its_eip_and_times_its_wait(viewer_client: Client, night: WebWorld) -> None:
    html = viewer_client.get(_url("node-a")).content.decode()
    assert _reason(html).startswith("ready: holds 203.0.113.1 since ")
    assert f'href="{reverse("eip-detail", args=[night.eips[0].allocation_id])}"' in html
    timeline = html[html.index('id="node-timeline"'):]
    assert re.findall(r'data-what="([^"]+)"', timeline) == ["registered", "assigned", "taint lifted"]


def test_unknown_nodes_and_clusters_are_a_clear_404(viewer_client: Client, night: WebWorld) -> None:
    for url in (_url("node-zz"), _url("node-a", cluster="elsewhere")):
        response = viewer_client.get(url)
        assert response.status_code == 404, url
        assert "neither a node row nor any history" in response.content.decode()


def test_the_reader_rule(client: Client, night: WebWorld) -> None:
    assert client.get(_url("node-b"))["Location"].startswith("/accounts/login/?next=")
    stranger = Client()
    stranger.force_login(User.objects.create_user("nobody", password=PASSWORD))
    assert stranger.get(_url("node-b")).status_code == 403


def test_a_gone_node_answers_from_its_row_then_from_its_history(viewer_client: Client, night: WebWorld) -> None:
    gone_at = timezone.now() - dt.timedelta(minutes=5)
    Node.objects.filter(name="node-c").update(state=Node.State.GONE, deleted_at=gone_at, instance_state="terminated")
    assert _reason(viewer_client.get(_url("node-c")).content.decode()).startswith("gone: deleted from the cluster at ")
    # The row pruned by retention: the history still names it, and the page says what it knows.
    ghost = Node(cluster=night.cluster, name="node-ghost", instance_id="i-0ghost")
    record(Event.Kind.RELEASED, spec=night.spec, eip=night.eips[1], node=ghost, at=gone_at, reason="node deleted")
    response = viewer_client.get(_url("node-ghost"))
    assert response.status_code == 200
    html = response.content.decode()
    assert _reason(html).startswith("gone: the record keeps only its history")
    assert re.findall(r'data-what="([^"]+)"', html[html.index('id="node-timeline"'):]) == ["released"]
    # Its history names a cluster: the same name in another cluster is another node, unknown there.
    assert viewer_client.get(_url("node-ghost", cluster="elsewhere")).status_code == 404


def test_the_live_part_polls_and_answers_htmx_with_the_partial_only(viewer_client: Client, night: WebWorld) -> None:
    url = _url("node-b")
    page = viewer_client.get(url).content.decode()
    assert 'id="node-live"' in page and 'hx-trigger="every 5s"' in page and "data-live" in page
    assert f'href="{url}"' in page  # the plain refresh link beside it
    partial = viewer_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in partial and 'id="node-live"' in partial[:300] and 'id="node-reason"' in partial


def test_the_page_costs_the_same_queries_whatever_the_record_holds(
        viewer_client: Client, night: WebWorld, django_assert_max_num_queries) -> None:
    url = _url("node-b")
    viewer_client.get(url)
    with django_assert_max_num_queries(40) as small:
        assert viewer_client.get(url).status_code == 200
    waiting = Node.objects.get(name="node-b")
    for index in range(20, 50):
        eip = make_eip(index)
        node = make_node(f"node-x{index}", spec=night.spec, index=index, state=Node.State.READY, labels=LABELS)
        assign(eip, node)
        record(Event.Kind.ERROR, spec=night.spec, node=waiting, reason=f"step failed {index}")
    cache.clear()
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert viewer_client.get(url).status_code == 200


def test_every_node_name_links_to_its_page(viewer_client: Client, night: WebWorld) -> None:
    node_a, node_b = _url("node-a"), _url("node-b")
    LaunchSpec.objects.filter(pk=night.spec.pk).update(active_alerts=["node-no-ipv4:node-b"])
    pages = {
        "nodes": (reverse("node-list"), {node_a, node_b}),
        "spec": (reverse("launch-spec-detail", args=["egress"]), {node_a, node_b}),
        "eip": (reverse("eip-detail", args=[night.eips[0].allocation_id]), {node_a}),
        "eips": (reverse("eip-list"), {node_a}),
        "history": (reverse("history"), {node_a}),
        "overview": (reverse("overview"), {node_b}),
    }
    for page, (url, expected) in pages.items():
        html = viewer_client.get(url).content.decode()
        linked = set(re.findall(r'href="(/nodes/[^"?]+/)"', html))
        assert expected <= linked, (page, linked)


def test_the_node_page_marks_nodes_in_the_main_menu(viewer_client: Client, night: WebWorld) -> None:
    html = viewer_client.get(_url("node-a")).content.decode()
    assert re.search(r'<a href="/nodes/" aria-current="page">Nodes</a>', html)


def _plan_section(html: str) -> str:
    return html.split('id="node-next-pass"', 1)[1].split("</section>", 1)[0]


def test_node_detail_reads_the_plan_its_spec_s_last_pass_stored_and_says_its_age(
        viewer_client: Client, web_world: WebWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """node-b waits while 203.0.113.2 is free: the plan the spec's last pass stored gives it that EIP. The page says
    so at the top and shows that plan's line for it with the pass's time and age, as the spec page does, and no
    request runs the planner (selectors.plan_previews, node_reason.next_pass_of_lines)."""
    Node.objects.filter(cluster=web_world.cluster).update(labels=LABELS)
    planned_at = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=12)
    stored = store_plan_as_a_pass(web_world.spec, planned_at=planned_at)
    assert "assign 203.0.113.2 → node-b" in stored.describe()
    refuse_planning(monkeypatch)
    html = viewer_client.get(_url("node-b")).content.decode()
    assert _reason(html).startswith("assigning: the next pass gives it 203.0.113.2")
    section = _plan_section(html)
    assert "Plan of the last pass" in section and "assign 203.0.113.2 → node-b" in section
    stamp = f'<time datetime="{planned_at:%Y-%m-%dT%H:%M:%SZ}">{planned_at:%H:%M:%S} UTC</time>'
    assert f"Plan of the pass at {stamp}, " in section
    assert "12s ago" in section or "13s ago" in section  # the page's second may have turned
    assert 'id="node-plan-stale"' not in section and 'id="node-plan-outdated"' not in section
    # The API's waitingReason: the page's words, from the same stored plan.
    rows = {row["name"]: row for row in viewer_client.get("/api/v1/nodes/").json()["results"]}
    assert rows["node-b"]["waitingReason"].startswith("assigning: the next pass gives it 203.0.113.2")


def test_node_detail_marks_a_stale_or_outdated_stored_plan_and_does_without_one(
        viewer_client: Client, web_world: WebWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    Node.objects.filter(cluster=web_world.cluster).update(labels=LABELS)
    refuse_planning(monkeypatch)
    # No pass has planned the spec yet: the reason goes by the pool's counts, and no plan is shown.
    html = viewer_client.get(_url("node-b")).content.decode()
    assert _reason(html).startswith("waiting: the pool of egress has 1 free of 2; the next pass decides")
    assert 'id="node-next-pass"' not in html
    monkeypatch.undo()
    store_plan_as_a_pass(web_world.spec, planned_at=timezone.now() - dt.timedelta(hours=1))
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(updated_at=timezone.now())  # edited since that pass
    refuse_planning(monkeypatch)
    section = _plan_section(viewer_client.get(_url("node-b")).content.decode())
    assert 'id="node-plan-stale"' in section and 'id="node-plan-outdated"' in section
    assert "assign 203.0.113.2 → node-b" in section
