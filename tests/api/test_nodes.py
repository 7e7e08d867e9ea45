"""/api/v1/nodes/: each node's waitingReason (the node page's words), its events (the API's history of that
node) and its page; /api/v1/events/?node=&cluster=."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pools.models import Cluster, Event, Node
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld, assign, make_eip, make_node, record

LABELS = {"eks.amazonaws.com/nodegroup": "egress"}


def _exhausted(w: WebWorld) -> None:
    """node-b waits on an empty pool: node-c took the last free EIP."""
    Node.objects.filter(cluster=w.cluster).update(labels=LABELS)
    assign(w.eips[1], make_node("node-c", spec=w.spec, index=3, state=Node.State.READY, labels=LABELS))


def test_each_node_says_why_it_waits_and_links_its_events_and_page(web_world: WebWorld, viewer_api: Api) -> None:
    _exhausted(web_world)
    rows = {row["name"]: row for row in viewer_api.get("/api/v1/nodes/").json()["results"]}
    assert rows["node-b"]["waitingReason"].startswith("waiting: the pool of egress has 0 free of 2 (since ")
    assert rows["node-a"]["waitingReason"] == "" and rows["node-c"]["waitingReason"] == ""
    assert rows["node-b"]["page"] == "http://testserver" + reverse("node-detail", args=["prod", "node-b"])
    assert rows["node-b"]["events"] == "http://testserver/api/v1/events/?node=node-b&cluster=prod"


def test_the_events_link_lists_that_nodes_history_only(web_world: WebWorld, viewer_api: Api) -> None:
    node_a = Node.objects.get(name="node-a")
    twin_cluster = Cluster.objects.create(name="prod-eu", region="eu-west-1", kube_context="prod-eu")
    twin = Node(cluster=twin_cluster, name="node-a", instance_id="i-twin")
    record(Event.Kind.ERROR, eip=None, node=twin, reason="the other cluster's node-a")
    Event.objects.filter(reason="the other cluster's node-a").update(cluster="prod-eu")
    record(Event.Kind.ERROR, spec=web_world.spec, node=Node(name="node-aa", instance_id="i-aa"),
           reason="a node whose name contains node-a")
    record(Event.Kind.RELEASED, spec=web_world.spec, node=node_a, eip=web_world.eips[0],
           at=timezone.now() - dt.timedelta(days=2), reason="an older life")
    link = next(row["events"] for row in viewer_api.get("/api/v1/nodes/").json()["results"] if row["name"] == "node-a")
    body = viewer_api.client.get(link, headers=viewer_api.headers).json()
    assert [(row["event"], row["node"], row["cluster"]) for row in body["results"]] == [
        ("taint_lifted", "node-a", "prod"), ("assigned", "node-a", "prod"), ("released", "node-a", "prod")]
    # With the history's other filters, and the node alone (every cluster's).
    assert [r["event"] for r in viewer_api.get("/api/v1/events/", node="node-a", event="assigned").json()["results"]
            ] == ["assigned"]
    assert len(viewer_api.get("/api/v1/events/", node="node-a").json()["results"]) == 4
    assert viewer_api.get("/api/v1/events/", node="x" * 300).status_code == 400


def test_waiting_reasons_cost_no_query_per_node(web_world: WebWorld, viewer_api: Api) -> None:
    _exhausted(web_world)
    counts = []
    for grow in (0, 40):
        for index in range(100, 100 + grow):
            node = make_node(f"n-{index}", spec=web_world.spec, index=index, state=Node.State.READY, labels=LABELS)
            assign(make_eip(index), node)
        with CaptureQueriesContext(connection) as queries:
            assert viewer_api.get("/api/v1/nodes/").status_code == 200
        counts.append(len(queries))
    assert counts[1] <= counts[0] + 1, counts  # +1: the token's last_used_at, once a minute
