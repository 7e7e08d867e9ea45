"""/api/v1/eips/, /nodes/ and /events/: the pages' filters, the history export's filter refusals, and cursor
pages that follow `next` to the end without a skip or a repeat, even while rows are added."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pools import selectors
from pools.models import Event, Node, UnmanagedAddress
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld, make_eip, make_node, record


def _all_pages(api: Api, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every row, following `next` links; and how many pages that took."""
    response = api.get(path, **params)
    assert response.status_code == 200, response.content
    rows, pages = list(response.json()["results"]), 1
    while (link := response.json()["next"]) is not None:
        response = api.client.get(link, headers=api.headers)
        assert response.status_code == 200
        rows += response.json()["results"]
        pages += 1
    return rows, pages


def test_eips_with_the_inventory_pages_filters(web_world: WebWorld, viewer_api: Api) -> None:
    free, gone = web_world.eips[1], web_world.eips[2]
    make_eip(9, tags={"other": "x"})
    body = viewer_api.get("/api/v1/eips/").json()
    assert len(body["results"]) == 4 and body["next"] is None
    held = next(row for row in body["results"] if row["allocationId"] == web_world.eips[0].allocation_id)
    assert held["state"] == "assigned" and held["node"] == "node-a" and held["launchSpec"] == "egress"
    for params, expected in (
        ({"spec": "egress"}, {e.allocation_id for e in web_world.eips}),
        ({"state": "free"}, {free.allocation_id, "eipalloc-00000000000000009"}),
        ({"state": "gone"}, {gone.allocation_id}),
        ({"q": "node-a"}, {web_world.eips[0].allocation_id}),
        ({"spec": "egress", "state": "free"}, {free.allocation_id}),
    ):
        got = {row["allocationId"] for row in viewer_api.get("/api/v1/eips/", **params).json()["results"]}
        page = {e.allocation_id for e in selectors.eip_list(spec=web_world.spec if "spec" in params else None,
                                                            state=params.get("state", ""), q=params.get("q", ""))}
        assert got == expected == page, params


def test_unmanaged_eips_only_when_asked_as_on_the_page(web_world: WebWorld, viewer_api: Api) -> None:
    UnmanagedAddress.objects.create(allocation_id="eipalloc-foreign", region="us-east-1", public_ip="198.51.100.9",
                                    tags={"team": "other"}, instance_id="i-foreign", last_seen_at=timezone.now())
    every = {row["allocationId"] for row in viewer_api.get("/api/v1/eips/").json()["results"]}
    assert "eipalloc-foreign" not in every and len(every) == 3
    (row,) = viewer_api.get("/api/v1/eips/", state="unmanaged").json()["results"]
    assert (row["allocationId"], row["state"], row["gone"]) == ("eipalloc-foreign", "unmanaged", False)
    assert row["node"] is None and row["publicIp"] == "198.51.100.9"
    assert viewer_api.get("/api/v1/eips/", state="unmanaged", q="198.51").json()["results"] == [row]
    assert viewer_api.get("/api/v1/eips/", state="unmanaged", spec="egress").json()["results"] == []


def test_eip_filters_that_cannot_be_read_are_400(web_world: WebWorld, viewer_api: Api) -> None:
    bad_state = viewer_api.get("/api/v1/eips/", state="lost")
    assert bad_state.status_code == 400 and bad_state.json()["problems"][0].startswith("state: ")
    unknown = viewer_api.get("/api/v1/eips/", spec="nope")
    assert unknown.status_code == 400 and unknown.json()["problems"] == ["spec: no launch spec named 'nope'"]


def test_one_eip(web_world: WebWorld, viewer_api: Api) -> None:
    eip = web_world.eips[0]
    body = viewer_api.get(f"/api/v1/eips/{eip.allocation_id}").json()
    assert body["publicIp"] == eip.public_ip and body["state"] == "assigned" and body["instanceId"]
    missing = viewer_api.get("/api/v1/eips/eipalloc-nope")
    assert missing.status_code == 404 and missing.json()["detail"] == "no Elastic IP 'eipalloc-nope'"


def test_eip_pages_follow_next_without_skip_or_repeat(web_world: WebWorld, viewer_api: Api) -> None:
    for index in range(10, 35):
        make_eip(index)
    expected = sorted(e.allocation_id for e in selectors.eip_list())
    rows, pages = _all_pages(viewer_api, "/api/v1/eips/", limit=7)
    assert [row["allocationId"] for row in rows] == expected and pages == 4
    # A row added between two pages, before the cursor, neither shifts nor repeats what follows.
    first = viewer_api.get("/api/v1/eips/", limit=7).json()
    make_eip(1000)  # eipalloc-0000…3e8 sorts before the cursor position
    second = viewer_api.client.get(first["next"], headers=viewer_api.headers).json()
    assert [r["allocationId"] for r in first["results"] + second["results"]] == expected[:14]


def test_nodes_with_the_nodes_pages_filters(web_world: WebWorld, viewer_api: Api) -> None:
    make_node("node-gone", spec=web_world.spec, index=7, state=Node.State.GONE)
    rows, _ = _all_pages(viewer_api, "/api/v1/nodes/")
    assert [row["name"] for row in rows] == ["node-a", "node-b"]
    assert rows[0]["publicIp"] == web_world.eips[0].public_ip and rows[0]["cluster"] == "prod"
    assert rows[1]["startupTainted"] is True and rows[1]["publicIp"] is None
    gone = viewer_api.get("/api/v1/nodes/", state="gone").json()["results"]
    assert [row["name"] for row in gone] == ["node-gone"]
    assert [r["name"] for r in viewer_api.get("/api/v1/nodes/", q="node-b").json()["results"]] == ["node-b"]
    assert viewer_api.get("/api/v1/nodes/", state="nope").status_code == 400
    for index in range(10, 30):
        make_node(f"n-{index:02d}", spec=web_world.spec, index=index, state=Node.State.READY)
    rows, pages = _all_pages(viewer_api, "/api/v1/nodes/", spec="egress", limit=6)
    assert [row["name"] for row in rows] == [f"n-{i:02d}" for i in range(10, 30)] + ["node-a", "node-b"]
    assert pages == 4


def test_events_with_the_history_exports_filters(web_world: WebWorld, viewer_api: Api) -> None:
    old = timezone.now() - dt.timedelta(days=3)
    record(Event.Kind.RELEASED, spec=web_world.spec, at=old, reason="long ago")
    everything = viewer_api.get("/api/v1/events/").json()["results"]
    # The viewer's token was made for this test: its creation is the newest event.
    assert [row["event"] for row in everything] == ["token_created", "taint_lifted", "assigned", "released"]
    since = (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    recent = viewer_api.get("/api/v1/events/", since=since).json()["results"]
    assert [row["event"] for row in recent] == ["token_created", "taint_lifted", "assigned"]
    assert [r["reason"] for r in viewer_api.get("/api/v1/events/", event="released").json()["results"]] == ["long ago"]
    assert [r["event"] for r in viewer_api.get("/api/v1/events/", spec="egress").json()["results"]] == [
        "taint_lifted", "assigned", "released"]
    assert [r["event"] for r in viewer_api.get("/api/v1/events/", q="node-a").json()["results"]] == [
        "taint_lifted", "assigned"]


@pytest.mark.parametrize("params", [{"since": "yesterday"}, {"since": "2026-01-02", "until": "2026-01-01"},
                                    {"event": "exploded"}, {"spec": "never-was"}])
def test_bad_event_filters_are_400_with_the_exports_message(
    web_world: WebWorld, viewer_api: Api, viewer_client: Client, params: dict[str, str]
) -> None:
    response = viewer_api.get("/api/v1/events/", **params)
    export = viewer_client.get(reverse("history-export-csv"), params)
    assert response.status_code == 400 == export.status_code
    assert response.json()["detail"] == export.content.decode()


def test_event_pages_keep_their_order_through_equal_timestamps(web_world: WebWorld, viewer_api: Api) -> None:
    moment = timezone.now() - dt.timedelta(hours=1)
    for index in range(23):
        record(Event.Kind.ASSIGNED, spec=web_world.spec, at=moment, reason=f"same instant {index}")
    expected = list(selectors.event_list(filters=selectors.EventFilters()).values_list("id", flat=True))
    rows, pages = _all_pages(viewer_api, "/api/v1/events/", limit=5)
    assert [row["id"] for row in rows] == expected and pages == -(-len(expected) // 5)


def test_a_page_costs_the_same_queries_for_many_rows(
    web_world: WebWorld, viewer_api: Api
) -> None:
    """No query per row: a page of 2 rows and a page of 60 cost the same (auth, throttle and the page's own)."""
    counts = {}
    for size in ("small", "large"):
        if size == "large":
            for index in range(10, 70):
                eip = make_eip(index)
                node = make_node(f"n-{index}", spec=web_world.spec, index=index, state=Node.State.READY)
                record(Event.Kind.ASSIGNED, spec=web_world.spec, eip=eip, node=node)
        for path in ("/api/v1/eips/", "/api/v1/nodes/", "/api/v1/events/"):
            with CaptureQueriesContext(connection) as queries:
                assert viewer_api.get(path).status_code == 200
            counts[(size, path)] = len(queries)
    for path in ("/api/v1/eips/", "/api/v1/nodes/", "/api/v1/events/"):
        assert counts[("large", path)] <= counts[("small", path)] + 1, counts  # +1: last_used_at once a minute


def test_events_of_one_timestamp_page_by_id_every_event_once(db: None, viewer_api: Api) -> None:
    """DRF's cursor paged by the first ordering field only: 1,000+ events of one timestamp looped for ever."""
    # A whole second before the viewer token's creation event, so that it stays the newest: "now" rounded down
    # was newer than it whenever a second began between the two (CI: the token at 20:05:48.996, the ties at
    # 20:05:49.000).
    token_at = Event.objects.get(kind="token_created").timestamp
    moment = token_at.replace(microsecond=0) - dt.timedelta(seconds=1)
    Event.objects.bulk_create(Event(timestamp=moment, kind="assigned", actor="test", reason=f"tie {i}")
                              for i in range(1500))
    seen: list[int] = []
    response = viewer_api.get("/api/v1/events/", limit=100)
    for _ in range(20):  # 15 pages; a loop would never reach the end
        assert response.status_code == 200, response.content
        seen += [row["id"] for row in response.json()["results"]]
        if (link := response.json()["next"]) is None:
            break
        response = viewer_api.client.get(link, headers=viewer_api.headers)
    assert response.json()["next"] is None
    # The viewer token's creation (the newest), then the 1,500 ties by id.
    assert seen[0] == Event.objects.get(kind="token_created").pk
    ties = seen[1:]
    assert len(ties) == 1500 and set(seen) == set(Event.objects.values_list("id", flat=True))
    assert ties == sorted(ties, reverse=True)


def test_a_bad_cursor_or_limit_is_refused(db: None, viewer_api: Api) -> None:
    assert viewer_api.get("/api/v1/events/", cursor="nonsense").status_code == 400
    assert viewer_api.get("/api/v1/nodes/", limit="0").status_code == 400
    assert viewer_api.get("/api/v1/eips/", limit="5000").status_code == 400


def test_nodes_of_one_name_in_several_clusters_page_by_id(db: None, viewer_api: Api) -> None:
    from pools.models import Cluster

    for index, region in enumerate(["us-east-1", "eu-west-1", "eu-central-1", "us-west-2"], start=1):
        cluster = Cluster.objects.create(name=f"c{index}", region=region, kube_context=f"c{index}")
        now = timezone.now()
        Node.objects.create(cluster=cluster, name="ip-10-0-0-1", instance_id=f"i-{index}", first_seen_at=now,
                            last_seen_at=now)
    rows, pages = _all_pages(viewer_api, "/api/v1/nodes/", limit=1)
    assert pages == 4 and sorted(row["cluster"] for row in rows) == ["c1", "c2", "c3", "c4"]


def test_the_allowlists_changes_are_events_with_their_ip_in_the_api_and_the_export(
        web_world: WebWorld, viewer_api: Api, viewer_client: Client) -> None:
    eip = make_eip(77, tags={"eipdash/pool": "egress"})
    record(Event.Kind.POOL_JOINED, spec=web_world.spec, eip=eip, reason="tagged eipdash/pool=egress")
    record(Event.Kind.POOL_LEFT, spec=web_world.spec, eip=eip, reason="released from the account")
    for kind, reason in (("pool_joined", "tagged eipdash/pool=egress"), ("pool_left", "released from the account")):
        (row,) = viewer_api.get("/api/v1/events/", event=kind).json()["results"]
        assert (row["publicIp"], row["reason"], row["launchSpec"]) == (eip.public_ip, reason, "egress")
        response = viewer_client.get(reverse("history-export-csv"), {"event": kind})
        exported = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
        assert exported.count(eip.public_ip) == 1 and kind in exported
