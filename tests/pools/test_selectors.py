"""Dashboard reads on plain rows: pool membership and states, use over time, time to EIP, inventory search."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pools import selectors
from pools.models import Assignment, Cluster, Event, LaunchSpec, Node
from tests.fixtures.web import WebWorld, assign, make_eip, make_node

pytestmark = pytest.mark.django_db


def test_pool_membership_follows_region_and_tag_selector(web_world: WebWorld) -> None:
    any_value = LaunchSpec.objects.create(name="all-pools", cluster=web_world.cluster, labels={"a": "b"},
                                          tag_key="eipdash/pool", tag_value=None)  # fmt: skip
    west = Cluster.objects.create(name="west", region="us-west-2")
    LaunchSpec.objects.create(name="west", cluster=west, labels={"a": "b"}, tag_key="eipdash/pool", tag_value="egress")
    make_eip(60, tags={"eipdash/pool": "other"})
    make_eip(61, tags={"eipdash/pool": "egress"}, region="us-west-2")
    make_eip(62, tags={"unrelated": "egress"})
    stats = {row.spec.name: row for row in selectors.pool_stats_list()}
    # egress: eips 1, 2 (3 is gone); all-pools also sees 60; west sees 61 only.
    assert (stats["egress"].pool_size, stats["egress"].in_use, stats["egress"].free) == (2, 1, 1)
    assert stats["all-pools"].pool_size == 3
    assert stats["west"].pool_size == 1
    assert {e.public_ip for e in selectors.eip_list(spec=web_world.spec)} == {
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
    }
    assert {e.public_ip for e in selectors.eip_list(spec=any_value)} >= {"203.0.113.60"}
    assert [s.name for s in selectors.launch_spec_for_eip(eip=web_world.eips[1])] == ["all-pools", "egress"]


def test_eip_states(web_world: WebWorld) -> None:
    foreign = make_eip(70, association_id="eipassoc-foreign", instance_id="i-foreign")
    states = {e.public_ip: selectors.eip_state(e) for e in selectors.eip_list()}
    assert states == {
        "203.0.113.1": "assigned",
        "203.0.113.2": "free",
        "203.0.113.3": "gone",
        "203.0.113.70": "conflict",
    }
    for state in selectors.EIP_STATES:
        rows = list(selectors.eip_list(state=state))
        assert rows and all(selectors.eip_state(e) == state for e in rows)
    assert foreign.public_ip in {e.public_ip for e in selectors.eip_list(state="conflict")}


@pytest.mark.parametrize(
    "q,expected",
    [
        ("203.0.113.2", {"203.0.113.2"}),
        ("eipalloc-00000000000000001", {"203.0.113.1"}),
        ("node-a", {"203.0.113.1"}),  # the node holding it
        ("i-00000000000000001", {"203.0.113.1"}),
        ("team-blue", {"203.0.113.80"}),  # a tag value
    ],
)
def test_eip_search(web_world: WebWorld, q: str, expected: set[str]) -> None:
    make_eip(80, tags={"eipdash/pool": "egress", "team": "team-blue"})
    assert {e.public_ip for e in selectors.eip_list(q=q)} == expected


def test_eip_sort_by_node(web_world: WebWorld) -> None:
    assign(web_world.eips[1], web_world.nodes[1])
    # current_node is an annotation of eip_annotated(), unknown to the model's type.
    ordered = [node for e in selectors.eip_list(sort="-node") if (node := getattr(e, "current_node", None))]
    assert ordered == ["node-b", "node-a"]


def test_draining_nodes_holding_an_eip(web_world: WebWorld) -> None:
    Node.objects.filter(pk=web_world.nodes[0].pk).update(state=Node.State.DRAINING, draining=True, workload_pods=2)
    make_node("node-drained", spec=web_world.spec, index=9, state=Node.State.DRAINING, draining=True, workload_pods=0)
    # Past assignments of a node must not be counted as holding.
    old = make_node("node-old", spec=web_world.spec, index=10, draining=True)
    Assignment.objects.create(eip=web_world.eips[1], node=old, launch_spec=web_world.spec, opened_at=timezone.now(),
                              closed_at=timezone.now())  # fmt: skip
    assert selectors.pool_stats_get(spec=web_world.spec).draining_holding == 1


def test_pool_use_series_from_assignment_intervals(web_world: WebWorld) -> None:
    now = timezone.now().replace(microsecond=0)
    Assignment.objects.all().delete()
    node_a, node_b = web_world.nodes
    eip1, eip2 = web_world.eips[:2]
    Assignment.objects.create(eip=eip1, node=node_a, launch_spec=web_world.spec, opened_at=now - dt.timedelta(hours=30),
                              closed_at=now - dt.timedelta(hours=10))  # fmt: skip
    Assignment.objects.create(eip=eip2, node=node_b, launch_spec=web_world.spec, opened_at=now - dt.timedelta(hours=12),
                              closed_at=None)  # fmt: skip
    stats = selectors.pool_stats_list()
    (series,) = selectors.pool_use_series(stats=stats, now=now, hours=24, step_minutes=60)
    by_hours_ago = {round((now - t).total_seconds() / 3600): v for t, v in series.points}
    assert by_hours_ago[24] == 1 and by_hours_ago[11] == 2 and by_hours_ago[9] == 1 and by_hours_ago[0] == 1
    assert series.pool_size == 2


def test_time_to_eip_histogram(web_world: WebWorld) -> None:
    now = timezone.now()
    for i, seconds in enumerate([3, 4, 8, 45, 400]):
        make_node(f"n{i}", spec=web_world.spec, index=20 + i, first_seen_at=now - dt.timedelta(seconds=seconds + 60),
                  eip_ready_at=now - dt.timedelta(seconds=60))  # fmt: skip
    make_node("old", spec=web_world.spec, index=40, first_seen_at=now - dt.timedelta(days=3),
              eip_ready_at=now - dt.timedelta(days=2))  # fmt: skip
    histogram = selectors.time_to_eip_histogram()
    counts = dict(histogram.buckets)
    # node-a from the fixture took 12 s.
    assert histogram.count == 6
    assert (counts["<5s"], counts["5–10s"], counts["10–20s"], counts["30–60s"], counts[">5m"]) == (2, 1, 1, 1, 1)
    assert histogram.p50 is not None and 8 <= histogram.p50 <= 12


def test_reassign_targets_exclude_holders_draining_and_gone(web_world: WebWorld) -> None:
    make_node("gone", spec=web_world.spec, index=50, deleted_at=timezone.now())
    make_node("stopped", spec=web_world.spec, index=51, instance_state="stopped")
    make_node("ok", spec=web_world.spec, index=52)
    names = [n.name for n in selectors.node_reassign_targets(spec=web_world.spec)]
    assert names == ["node-b", "ok"]


def test_history_search_matches_each_field_alone_case_blind_and_literally(web_world: WebWorld) -> None:
    """The same rows on PostgreSQL (one LIKE on the trigram-indexed expression) and SQLite (ORs)."""
    Event.objects.all().delete()
    now = timezone.now()
    rows = {
        "by-node": {"node": "ip-10-7-123-4.ec2.internal"},
        "by-ip": {"public_ip": "198.51.100.7"},
        "by-alloc": {"allocation_id": "eipalloc-0abc"},
        "by-instance": {"instance_id": "i-0fedcba"},
        "by-actor": {"actor": "Olivia-Operator"},
        "by-reason": {"reason": "50% of the pool_size used"},
    }
    for i, (tag, values) in enumerate(rows.items()):
        Event.objects.create(timestamp=now - dt.timedelta(seconds=i), kind=Event.Kind.ERROR, launch_spec=tag, **values)

    def found(q: str) -> set[str]:
        return {e.launch_spec for e in selectors.event_list(filters=selectors.EventFilters(q=q))}

    assert found("IP-10-7-123") == {"by-node"}
    assert found("100.7") == {"by-ip"}
    assert found("0ABC") == {"by-alloc"}
    assert found("i-0fed") == {"by-instance"}
    assert found("olivia") == {"by-actor"}
    assert found("50%") == {"by-reason"} and found("0%") == {"by-reason"}
    assert found("pool_size") == {"by-reason"} and found("pool-size") == set()  # _ is literal, not a wildcard
    assert found("%") == {"by-reason"} and found("\\") == set()
    # Never across two fields: the end of the node name followed by the start of the next field.
    assert found("internal198") == set() and found("internal") == {"by-node"}


@pytest.mark.parametrize("q,spec", [("olivia", ""), ("OLIVIA", "egress"), ("node-3", ""), ("node-59", ""),
                                    ("nobody", ""), ("50%", "")])
def test_event_page_search_gives_event_lists_rows_page_by_page_on_both_sides_of_its_window(
        web_world: WebWorld, monkeypatch: pytest.MonkeyPatch, q: str, spec: str) -> None:
    """_search_newest_first reads the newest SEARCH_WINDOW rows first (a scan), then the older ones (the search
    index): a window of 7 rows here, so pages of 4 fall inside it, across its edge and past it. Every page is
    event_list's rows (one LIKE) in the same order: a text many rows hold, a rare one, one held only past the
    window, none, a literal %, with a spec filter too. Several rows share a timestamp at the edge."""
    Event.objects.all().delete()
    t0 = timezone.now()
    Event.objects.bulk_create([
        Event(timestamp=t0 - dt.timedelta(seconds=i // 3), kind=Event.Kind.ASSIGNED, node=f"node-{i}",
              launch_spec="egress" if i % 2 else "batch", actor="Olivia" if i % 5 == 0 else "system",
              reason="50% used" if i == 58 else "r")
        for i in range(60)
    ])  # fmt: skip
    monkeypatch.setattr(selectors, "SEARCH_WINDOW", 7)
    filters = selectors.EventFilters(q=q, spec=spec)
    expected = list(selectors.event_list(filters=filters).values_list("pk", flat=True))
    seen: list[int] = []
    before = ""
    for _ in range(30):
        page = selectors.event_page(filters=filters, before=before, size=4)
        seen += [event.pk for event in page.events]
        if page.next_cursor is None:
            break
        before = page.next_cursor
    assert seen == expected
    assert (len(expected) > 0) == (q != "nobody")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's plans of the trigram search")
def test_event_page_search_finds_a_frequent_text_without_the_search_index_whatever_the_planner_thinks(
        web_world: WebWorld) -> None:
    """A text many of the newest rows hold (an operator's name) is found by walking the newest rows, never by
    reading every match through the pg_trgm index and sorting them: at a million rows the planner took that
    plan whenever its sample of the search expression was small (125-195 ms a page against 4-8 ms). Here the
    planner is pushed towards it (index scans off: only bitmap scans are left, and the trigram index is the one
    the old single LIKE could use); the page's queries still do not touch the search index."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'pools_event_search_trgm'")
        assert cursor.fetchone(), "migration 0007's trigram index is missing: the test would prove nothing"
    Event.objects.all().delete()
    t0 = timezone.now()
    Event.objects.bulk_create([
        Event(timestamp=t0 - dt.timedelta(seconds=i), kind=Event.Kind.ASSIGNED, node=f"node-{i}",
              actor="olivia" if i % 5 == 0 else "system")
        for i in range(300)
    ])  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("SET LOCAL enable_seqscan = off")
    with CaptureQueriesContext(connection) as queries:
        page = selectors.event_page(filters=selectors.EventFilters(q="Olivia"), size=50)
    assert len(page.events) == 50 and all(e.actor == "olivia" for e in page.events)
    plans = []
    for query in queries.captured_queries:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {query['sql']}")
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    assert plans and not [plan for plan in plans if "pools_event_search_trgm" in plan], plans


def test_pool_stats_list_counts_the_holders_of_every_spec_on_live_and_ended_nodes(
        web_world: WebWorld, django_assert_num_queries) -> None:
    """The tiles' held and draining counts, for many specs at once: from the live nodes alone while every open
    assignment is on one of their live nodes (two queries), and still exact once an ended node, or a node of no
    spec, holds one (the next pass releases it), by reading the node of each open assignment."""
    other = LaunchSpec.objects.create(name="batch", cluster=web_world.cluster, labels={"a": "b"},
                                      tag_key="eipdash/pool", tag_value="batch")  # fmt: skip
    draining = make_node("node-d", spec=other, index=5, state=Node.State.DRAINING, draining=True, workload_pods=1)
    assign(make_eip(50, tags={"eipdash/pool": "batch"}), draining)
    specs = selectors.launch_spec_list()

    def counts() -> dict[str, tuple[int, int, int, int]]:
        return {row.spec.name: (row.held, row.draining_holding, row.nodes, row.waiting_nodes)
                for row in selectors.pool_stats_list(specs=specs)}

    with django_assert_num_queries(2):
        assert counts() == {"egress": (1, 0, 2, 1), "batch": (1, 1, 1, 0)}
    # node-a leaves the cluster with its EIP still on it; a node no spec claims holds another.
    Node.objects.filter(name="node-a").update(state=Node.State.GONE, deleted_at=timezone.now())
    stray = make_node("node-stray", spec=None, index=6, state=Node.State.READY)
    assign(make_eip(51, tags={}), stray)
    assert counts() == {"egress": (1, 0, 1, 1), "batch": (1, 1, 1, 0)}
    # One spec (its page): the same counts.
    assert selectors.pool_stats_get(spec=web_world.spec).held == 1
    Node.objects.filter(name="node-d").update(state=Node.State.GONE, deleted_at=timezone.now())
    assert counts() == {"egress": (1, 0, 1, 1), "batch": (1, 1, 0, 0)}


@pytest.mark.parametrize("sort", ["ip", "-ip", "node", "-state", "spec"])
def test_paged_rows_are_the_pages_of_the_list_with_their_columns(web_world: WebWorld, sort: str) -> None:
    """PagedRows picks a page's rows by a subquery of the list's filters and order: every page holds the rows the
    whole list holds there, in its order, with the columns the table shows (the annotations)."""
    for index in range(4, 30):
        eip = make_eip(index)
        if index % 3 == 0:
            assign(eip, make_node(f"node-{index:02d}", spec=web_world.spec, index=index, state=Node.State.READY))
    whole = [(e.allocation_id, e.current_node) for e in selectors.eip_list(sort=sort)]
    rows = selectors.PagedRows(selectors.eip_list(sort=sort))
    assert rows.count() == len(whole) == 29
    pages = [rows[start:start + 7] for start in range(0, 29, 7)]
    assert [(e.allocation_id, e.current_node) for page in pages for e in page] == whole
    # The nodes' pages leave the ended nodes out, those named first too.
    make_node("node-00-gone", spec=web_world.spec, index=40, state=Node.State.GONE)
    make_node("node-01-released", spec=web_world.spec, index=41, state=Node.State.RELEASED)
    for hide_ended in (True, False):
        nodes = selectors.node_list(hide_ended=hide_ended)
        names = [n.name for n in nodes]
        assert "node-00-gone" not in names and ("node-01-released" in names) is not hide_ended
        assert [n.name for n in selectors.PagedRows(nodes)[1:4]] == names[1:4]


def test_ip_sort_key_of_an_ipv4_address_without_parsing_it_is_the_same() -> None:
    """dbfunctions.ip_sort_key reads a plain IPv4 address by its text; whatever ipaddress would read otherwise (or
    refuse) keeps its own key."""
    from pools.dbfunctions import ip_sort_key, parsed_ip_sort_key

    for value in ("0.0.0.0", "9.8.7.6", "203.0.113.10", "255.255.255.255", "10.0.0.09", "010.0.0.1", "256.1.1.1",
                  "1.2.3", "1.2.3.4.5", "1.2.3.4\n", " 1.2.3.4", "1.2.3.٤", "::1", "2001:db8::1", "", "x"):
        assert ip_sort_key(value) == parsed_ip_sort_key(value), value
    assert ip_sort_key(None) == "9:"
    expected = ["4:009.008.007.006", "6:" + "0000:" * 7 + "0001", "9:x"]
    assert [ip_sort_key(value) for value in ("9.8.7.6", "::1", "x")] == expected
