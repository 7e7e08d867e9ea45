"""pools/selectors_capacity.py on database rows: peaks, idle cost, quota, egress, the API form, the chart series;
and the demand kept in the cache (pools/selectors_demand.py): a write shows at the next request, and figures kept
across writes equal the definition applied to every row."""

from __future__ import annotations

import datetime as dt
import random
import types
from collections.abc import Callable

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django.fixtures import Settings

from pools import selectors_demand
from pools.capacity import NodeDemand, demand_end, idle_hours, is_byoip, peak
from pools.models import Assignment, Cluster, ElasticIP, Event, LaunchSpec, Node, RegionFacts, UnmanagedAddress
from pools.pool_rule import in_pool
from pools.selectors import ENDED_NODE_STATES
from pools.selectors_capacity import Peak, capacity_report, capacity_report_list, demand_series, peak_list
from tests.fixtures.web import assign, make_eip, make_node

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def spec(db: None, now: dt.datetime) -> LaunchSpec:
    cluster = Cluster.objects.create(name="prod", region="us-east-1")
    made = LaunchSpec.objects.create(name="egress", cluster=cluster, labels={"pool": "egress"},
                                     tag_key="eipdash/pool", tag_value="egress", min_free=2)
    LaunchSpec.objects.filter(pk=made.pk).update(created_at=now - 90 * DAY)
    made.refresh_from_db()
    return made


def closed(eip: ElasticIP, node: Node, *, spec: LaunchSpec, confirmed: dt.datetime, closed_at: dt.datetime,
           kind: str = Assignment.CloseKind.RELEASED) -> Assignment:
    return Assignment.objects.create(eip=eip, node=node, launch_spec=spec, opened_at=confirmed, confirmed_at=confirmed,
                                     closed_at=closed_at, close_kind=kind)


def gone(name: str, spec: LaunchSpec, index: int, *, first: dt.datetime, deleted: dt.datetime | None,
         state: str = Node.State.GONE) -> Node:
    return make_node(name, spec=spec, index=index, state=state, first_seen_at=first, last_seen_at=deleted or first,
                     deleted_at=deleted)


def test_peaks_of_a_history_with_a_known_answer(spec: LaunchSpec, now: dt.datetime) -> None:
    eips = [make_eip(i) for i in (1, 2, 3)]
    other = LaunchSpec.objects.create(name="other", cluster=spec.cluster, tag_key="eipdash/pool", tag_value="other")
    # Live and holding since 20 days ago.
    holder = make_node("a", spec=spec, index=1, state=Node.State.READY, first_seen_at=now - 20 * DAY)
    assign(eips[0], holder, opened_at=now - 20 * DAY)
    # Around 15 days ago: a waiter deleted a day later, a node released and still listed, a short-lived one.
    gone("b", spec, 2, first=now - 15 * DAY, deleted=now - 14 * DAY)
    released = gone("c", spec, 3, first=now - 15 * DAY + HOUR, deleted=None, state=Node.State.RELEASED)
    closed(eips[1], released, spec=spec, confirmed=now - 15 * DAY + HOUR, closed_at=now - 14 * DAY + 12 * HOUR)
    gone("g", spec, 4, first=now - 15 * DAY + 2 * HOUR, deleted=now - 15 * DAY + 3 * HOUR)
    # Deleted before the window but its EIP taken back inside it: it held it until then.
    late = gone("d", spec, 5, first=now - 41 * DAY, deleted=now - 40 * DAY)
    closed(eips[1], late, spec=spec, confirmed=now - 41 * DAY, closed_at=now - 14 * DAY)
    # Now of another spec, tied to this one by an assignment of its pool that ended 15 days ago.
    moved = make_node("m", spec=other, index=6, first_seen_at=now - 16 * DAY)
    closed(eips[2], moved, spec=spec, confirmed=now - 16 * DAY, closed_at=now - 15 * DAY + 2 * HOUR + 30 * MINUTE,
           kind=Assignment.CloseKind.MOVED)
    # Released before the window and still listed: no demand in it (not "until now").
    old = gone("h", spec, 7, first=now - 50 * DAY, deleted=None, state=Node.State.RELEASED)
    closed(eips[2], old, spec=spec, confirmed=now - 50 * DAY, closed_at=now - 45 * DAY)
    # Long gone.
    gone("z", spec, 8, first=now - 100 * DAY, deleted=now - 90 * DAY)
    # The last week: a waiter since 3 days, and a node of 2 days ago deleted a day later.
    make_node("e", spec=spec, index=9, state=Node.State.WAITING, first_seen_at=now - 3 * DAY)
    gone("f", spec, 10, first=now - 2 * DAY, deleted=now - DAY)

    report = capacity_report(spec, now=now)

    assert report.peak30d == Peak(6, now - 15 * DAY + 2 * HOUR)  # a, b, c, g, d and m
    assert report.peak7d == Peak(3, now - 2 * DAY)  # a, e and f
    assert (report.pool, report.in_use, report.free, report.min_free) == (3, 1, 2, 2)
    assert report.shortfall == 3
    when = (now - 15 * DAY + 2 * HOUR).strftime("%Y-%m-%d %H:%M")
    assert report.shortfall_text() == f"the 30-day peak needed 6; the pool has 3: short by 3 ({when} UTC)"


def test_idle_cost_leaves_byoip_out(spec: LaunchSpec, now: dt.datetime, settings: Settings) -> None:
    settings.EIPDASH_IPV4_HOURLY_USD = 0.005
    billed = make_eip(1, public_ipv4_pool="amazon", first_seen_at=now - 60 * DAY)
    make_eip(2, public_ipv4_pool="ipv4pool-ec2-0123456789abcdef0", first_seen_at=now - 60 * DAY)
    make_eip(3, first_seen_at=now - 5 * DAY)  # PublicIpv4Pool not reported: billed, free for its 5 days
    holder = make_node("a", spec=spec, index=1, state=Node.State.READY, first_seen_at=now - 10 * DAY)
    assign(billed, holder, opened_at=now - 10 * DAY)
    earlier = gone("b", spec, 2, first=now - 41 * DAY, deleted=now - 25 * DAY)
    closed(billed, earlier, spec=spec, confirmed=now - 40 * DAY, closed_at=now - 25 * DAY)

    report = capacity_report(spec, now=now)

    # The billed one was free 30 - 5 - 10 = 15 days of the window, the unreported one 5: 480 address-hours.
    assert report.idle_month_usd == pytest.approx(480 * 0.005)
    assert report.as_api()["cost"] == {"hourlyUsd": 0.01, "monthUsd": 7.3, "idleMonthUsd": 2.4, "byoip": 1}


def test_idle_cost_counts_an_eip_retagged_into_the_pool_from_when_it_joined(
        spec: LaunchSpec, now: dt.datetime, settings: Settings) -> None:
    """An EIP first seen two months ago in another pool (or unmanaged), tagged into this one a day ago: this pool
    has paid for it a day, not 30."""
    settings.EIPDASH_IPV4_HOURLY_USD = 0.005
    eip = make_eip(1, public_ipv4_pool="amazon", first_seen_at=now - 60 * DAY)
    Event.objects.create(timestamp=now - 1 * DAY, kind=Event.Kind.POOL_JOINED, launch_spec=spec.name,
                         public_ip=eip.public_ip, allocation_id=eip.allocation_id, reason="tagged eipdash/pool=egress")
    Event.objects.create(timestamp=now - 20 * DAY, kind=Event.Kind.POOL_JOINED, launch_spec="another-spec",
                         public_ip=eip.public_ip, allocation_id=eip.allocation_id, reason="tagged eipdash/pool=x")
    assert capacity_report(spec, now=now).idle_month_usd == pytest.approx(24 * 0.005)
    assert capacity_report(spec, now=now).as_api()["cost"]["hourlyUsd"] == 0.005  # not rounded to a cent


def test_quota_from_the_region_facts(spec: LaunchSpec, now: dt.datetime) -> None:
    for i in (1, 2, 3):
        make_eip(i)
    make_eip(4, gone=True)
    make_eip(5, region="eu-west-1")
    for i in (6, 7):
        UnmanagedAddress.objects.create(allocation_id=f"eipalloc-u{i}", region="us-east-1", public_ip=f"198.51.100.{i}",
                                        last_seen_at=now)
    assert capacity_report(spec).as_api()["quota"] == {"limit": None, "allocated": 5, "available": None}
    assert capacity_report(spec).quota_error == "not read yet"

    RegionFacts.objects.create(region="us-east-1", eip_quota=None, quota_error="AccessDenied: servicequotas")
    assert capacity_report(spec).quota_error == "AccessDenied: servicequotas"

    RegionFacts.objects.filter(region="us-east-1").update(eip_quota=10, eip_quota_source="service-quotas")
    report = capacity_report(spec)
    assert report.as_api()["quota"] == {"limit": 10, "allocated": 5, "available": 5}
    assert report.quota_source == "service-quotas"


def test_egress_counts_the_live_nodes_by_subnet(spec: LaunchSpec) -> None:
    RegionFacts.objects.create(region="us-east-1", egress={
        "subnet-pub": {"via": "internet-gateway", "target": "igw-1", "address": ""},
        "subnet-nat": {"via": "nat", "target": "nat-1", "address": "1.2.3.4"},
        "subnet-iso": {"via": "none", "target": "", "address": ""},
    })  # fmt: skip
    for i, subnet in enumerate(["subnet-pub", "subnet-pub", "subnet-nat", "subnet-iso", "subnet-unread"], start=1):
        make_node(f"n{i}", spec=spec, index=i, subnet_id=subnet)
    make_node("released", spec=spec, index=8, subnet_id="subnet-pub", state=Node.State.RELEASED)
    make_node("deleted", spec=spec, index=9, subnet_id="subnet-pub", deleted_at=timezone.now())
    assert capacity_report(spec).as_api()["egress"] == {"nodes": 5, "viaInternetGateway": 2, "viaNat": 1,
                                                        "noRoute": 1}


def test_the_api_form_has_exactly_its_keys(spec: LaunchSpec) -> None:
    api = capacity_report(spec).as_api()
    assert set(api) == {"pool", "inUse", "free", "minFree", "peak7d", "peak30d", "shortfall", "quota", "cost",
                        "egress"}
    assert set(api["quota"]) == {"limit", "allocated", "available"}
    assert set(api["cost"]) == {"hourlyUsd", "monthUsd", "idleMonthUsd", "byoip"}
    assert set(api["egress"]) == {"nodes", "viaInternetGateway", "viaNat", "noRoute"}
    assert (api["peak7d"], api["peak30d"], api["shortfall"]) == (0, 0, 0)
    assert capacity_report(spec).shortfall_text() == "no node needed an EIP in the last 30 days; the pool has 0"


def test_demand_series_rebuilds_the_pool_from_its_events(spec: LaunchSpec, now: dt.datetime) -> None:
    for i in (1, 2, 3):
        make_eip(i)
    make_node("live", spec=spec, index=1, first_seen_at=now - 5 * HOUR - 30 * MINUTE)
    gone("went", spec, 2, first=now - 7 * HOUR, deleted=now - 3 * HOUR - 30 * MINUTE)
    for hours_ago, kind, name in ((9, Event.Kind.POOL_LEFT, "egress"), (5, Event.Kind.POOL_JOINED, "egress"),
                                  (3, Event.Kind.POOL_LEFT, "egress"), (1, Event.Kind.POOL_JOINED, "egress"),
                                  (4, Event.Kind.POOL_JOINED, "other")):
        Event.objects.create(timestamp=now - hours_ago * HOUR, kind=kind, launch_spec=name)

    series = demand_series(spec, now - 6 * HOUR, now - 2 * HOUR, points=5)

    assert [t for t, _d, _p in series] == [now - h * HOUR for h in (6, 5, 4, 3, 2)]
    assert [d for _t, d, _p in series] == [1, 2, 2, 1, 1]
    # 3 now; joined an hour ago (2 before), left 3 hours ago (3 before), joined 5 hours ago (2 before).
    assert [p for _t, _d, p in series] == [2, 3, 3, 2, 2]


def test_several_specs_cost_the_queries_of_one(spec: LaunchSpec, now: dt.datetime) -> None:
    make_eip(1)
    make_node("a", spec=spec, index=1)

    def queries(specs: list[LaunchSpec]) -> int:
        with CaptureQueriesContext(connection) as captured:
            capacity_report_list(specs=specs, now=now)
        return len(captured.captured_queries)

    one = queries([spec])
    for name in ("b", "c"):
        extra = LaunchSpec.objects.create(name=name, cluster=spec.cluster, tag_key="eipdash/pool", tag_value=name)
        make_eip(10 + len(name) + ord(name), tags={"eipdash/pool": name})
        make_node(f"{name}-1", spec=extra, index=20 + ord(name))
    assert queries(list(LaunchSpec.objects.select_related("cluster"))) == one


# --- the cache: a write shows at the next request -------------------------------------------------------------


def test_a_write_shows_in_the_next_report(spec: LaunchSpec, now: dt.datetime, settings: Settings) -> None:
    settings.EIPDASH_IPV4_HOURLY_USD = 1.0  # the idle cost in address-hours
    eip = make_eip(1, first_seen_at=now - 40 * DAY)
    holder = make_node("a", spec=spec, index=1, state=Node.State.READY, first_seen_at=now - 2 * DAY)
    assign(eip, holder, opened_at=now - 2 * DAY)
    assert capacity_report(spec, now=now).peak7d == Peak(1, now - 2 * DAY)
    # A new node waits: counted at once.
    make_node("b", spec=spec, index=2, state=Node.State.WAITING, first_seen_at=now - DAY)
    assert capacity_report(spec, now=now).peak7d == Peak(2, now - DAY)
    # The holder is deleted, its EIP taken back: it ends then, the EIP is free from then on.
    Node.objects.filter(pk=holder.pk).update(deleted_at=now - HOUR, state=Node.State.GONE)
    Assignment.objects.filter(node=holder).update(closed_at=now - HOUR, close_kind=Assignment.CloseKind.RELEASED)
    ElasticIP.objects.filter(pk=eip.pk).update(association_id="")
    report = capacity_report(spec, now=now)
    assert (report.peak7d, report.in_use, report.free) == (Peak(2, now - DAY), 0, 1)
    assert capacity_report(spec, now=now + 3 * DAY).peak7d == Peak(2, now - DAY)  # the window moves, the peak not
    # Free for the 28 days before the holder came and the hour after it went.
    assert report.idle_month_usd == pytest.approx(28 * 24 + 1)
    # The waiter gets the EIP: in use again, and no longer idle since.
    assign(eip, Node.objects.get(name="b"), opened_at=now - 30 * MINUTE)
    report = capacity_report(spec, now=now)
    assert (report.in_use, report.idle_month_usd) == (1, pytest.approx(28 * 24 + 0.5))


def test_a_warm_report_reads_no_history(spec: LaunchSpec, now: dt.datetime) -> None:
    make_eip(1)
    for i in range(1, 30):
        gone(f"g{i}", spec, i, first=now - i * DAY, deleted=now - i * DAY + HOUR)
    make_node("live", spec=spec, index=40, first_seen_at=now - HOUR)

    def rows_of_history() -> int:
        with CaptureQueriesContext(connection) as captured:
            capacity_report(spec, now=now)
        # The read of the deleted nodes' rows (the stamps only count them).
        return sum('"pools_node"."deleted_at" AS "deleted_at" FROM' in query["sql"]
                   for query in captured.captured_queries)

    assert rows_of_history() == 1
    assert rows_of_history() == 0
    cache.clear()
    assert rows_of_history() == 1


def test_metrics_peaks_follow_writes_and_trust_the_cache_a_while(
        spec: LaunchSpec, now: dt.datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    node = gone("a", spec, 1, first=now - 3 * DAY, deleted=now - 2 * DAY)
    closed(make_eip(1), node, spec=spec, confirmed=now - 3 * DAY, closed_at=now - 2 * DAY)
    assert peak_list(specs=[spec], now=now)[spec.pk][0] == Peak(1, now - 3 * DAY)
    with CaptureQueriesContext(connection) as captured:
        assert peak_list(specs=[spec], now=now)[spec.pk][0] == Peak(1, now - 3 * DAY)
    assert len(captured) == 1  # the signals alone
    make_node("b", spec=spec, index=2, first_seen_at=now - DAY)
    assert peak_list(specs=[spec], now=now)[spec.pk][0] == Peak(1, now - 3 * DAY)  # one at a time still
    make_node("c", spec=spec, index=3, first_seen_at=now - HOUR)
    assert peak_list(specs=[spec], now=now)[spec.pk][0] == Peak(2, now - HOUR)
    # A row that only leaves the history (the retention) moves no signal: it shows once the profile is checked
    # again, TRUST_SECONDS after the last check.
    Assignment.objects.filter(node=node).delete()
    Node.objects.filter(pk=node.pk).delete()
    monkeypatch.setattr(selectors_demand, "TRUST_SECONDS", 0)
    assert peak_list(specs=[spec], now=now)[spec.pk][1] == Peak(2, now - HOUR)
    assert capacity_report(spec, now=now).peak30d == Peak(2, now - HOUR)


# --- the cache across writes: the definition applied to every row ----------------------------------------------


def reference(spec: LaunchSpec, now: dt.datetime) -> tuple[Peak, Peak, float]:
    """The 7- and 30-day peaks and the idle address-hours by the module's definition, every row read: the spec's
    nodes that may overlap the window (their assignments of any time), and the nodes its window's assignments tie
    to it (those assignments)."""
    start = now - 30 * DAY
    rows = list(Assignment.objects.filter(launch_spec=spec))
    spans = []
    for node in Node.objects.all():
        mine = [row for row in rows if row.node_id == node.pk]
        window = [row for row in mine if row.closed_at is None or row.closed_at >= start]
        own = (node.launch_spec_id == spec.pk and node.first_seen_at < now
               and (node.deleted_at is None or node.deleted_at >= start))
        if not own and not window:
            continue
        considered = mine if own else window
        last_closed, kind = max(((row.closed_at, row.close_kind) for row in considered if row.closed_at),
                                default=(None, ""))
        demand = NodeDemand(first_seen_at=node.first_seen_at, last_seen_at=node.last_seen_at,
                            deleted_at=node.deleted_at, of_spec=node.launch_spec_id == spec.pk,
                            ended=node.deleted_at is not None or node.state in ENDED_NODE_STATES,
                            holding=any(row.closed_at is None for row in considered), last_closed=last_closed,
                            last_close_kind=kind)
        spans.append((node.first_seen_at, demand_end(demand, now)))
    idle = 0.0
    for eip in ElasticIP.objects.filter(gone=False):
        if in_pool(spec, region=eip.region, tags=eip.tags) and not is_byoip(eip.public_ipv4_pool):
            since = max(t for t in (start, eip.first_seen_at, spec.created_at) if t is not None)
            held = [(row.confirmed_at or row.opened_at, row.closed_at or now) for row in rows
                    if row.eip_id == eip.pk and (row.closed_at is None or row.closed_at >= start)]
            idle += idle_hours(since=since, now=now, held=held)
    return peak(spans, now - 7 * DAY, now), peak(spans, start, now), idle


def random_history(spec: LaunchSpec, other: LaunchSpec, now: dt.datetime, rng: random.Random) -> None:
    """Nodes of both specs over 45 days, deleted or not, with closed and open assignments of `spec`'s pool (of any
    close kind), all before now - 2 hours."""
    eips = [make_eip(i, first_seen_at=now - rng.randrange(1, 60) * DAY,
                     public_ipv4_pool="ipv4pool-ec2-1" if i == 6 else "amazon") for i in range(1, 9)]
    free = list(eips)
    for i in range(1, 45):
        first = now - dt.timedelta(hours=rng.randrange(3, 45 * 24))
        deleted = first + dt.timedelta(hours=rng.randrange(1, 300)) if rng.random() < 0.6 else None
        deleted = deleted if deleted is not None and deleted < now - 2 * HOUR else None
        state = Node.State.GONE if deleted else rng.choice([Node.State.READY, Node.State.WAITING,
                                                           Node.State.RELEASED, Node.State.DRAINING])
        node = make_node(f"n{i}", spec=spec if rng.random() < 0.85 else other, index=i, state=state,
                         first_seen_at=first, last_seen_at=deleted or now - 3 * HOUR, deleted_at=deleted)
        end = deleted or now - 2 * HOUR
        for _ in range(rng.randrange(0, 3)):
            opened = first + (end - first) * rng.random()
            closed(rng.choice(eips), node, spec=spec, confirmed=opened,
                   closed_at=opened + (end - opened) * rng.random(), kind=rng.choice(list(Assignment.CloseKind)))
        if free and rng.random() < 0.3:
            eip = free.pop(rng.randrange(len(free)))
            Assignment.objects.create(eip=eip, node=node, launch_spec=spec, opened_at=first, confirmed_at=first)


def _writes(spec: LaunchSpec, other: LaunchSpec, rng: random.Random) -> list[Callable[[dt.datetime], None]]:
    """What passes and the retention write, each at the moment given."""

    def live() -> Node:
        return rng.choice(list(Node.objects.filter(deleted_at__isnull=True)))

    def delete(t: dt.datetime) -> None:
        Node.objects.filter(pk=live().pk).update(deleted_at=t, state=Node.State.GONE)

    def close(t: dt.datetime) -> None:
        row = Assignment.objects.filter(closed_at__isnull=True).order_by("?").first()
        if row is not None:
            Assignment.objects.filter(pk=row.pk).update(closed_at=t, close_kind=rng.choice(list(Assignment.CloseKind)))

    def claim(t: dt.datetime) -> None:
        eip = ElasticIP.objects.exclude(assignments__closed_at__isnull=True).first()
        node = Node.objects.filter(deleted_at__isnull=True).exclude(assignments__closed_at__isnull=True).first()
        if eip is not None and node is not None:
            Assignment.objects.create(eip=eip, node=node, launch_spec=spec, opened_at=t)

    def arrive(t: dt.datetime) -> None:
        make_node(f"new-{t.timestamp()}", spec=spec, index=rng.randrange(100, 10**6), first_seen_at=t, last_seen_at=t)

    def come_back(t: dt.datetime) -> None:
        node = Node.objects.filter(deleted_at__isnull=False).order_by("?").first()
        if node is not None:  # a reused name: a new node in the old row, of either spec
            Node.objects.filter(pk=node.pk).update(deleted_at=None, first_seen_at=t, state=Node.State.WAITING,
                                                   launch_spec=rng.choice([spec, other]))

    def end(t: dt.datetime) -> None:
        Node.objects.filter(pk=live().pk).update(state=Node.State.RELEASED, last_seen_at=t)

    def move(t: dt.datetime) -> None:
        Node.objects.filter(pk=live().pk).update(launch_spec=other)

    def prune(t: dt.datetime) -> None:
        Assignment.objects.filter(pk__in=Assignment.objects.filter(closed_at__isnull=False)
                                  .order_by("closed_at").values("pk")[:2]).delete()

    return [delete, close, claim, arrive, come_back, end, move, prune]


def test_figures_kept_across_writes_are_those_of_every_row(spec: LaunchSpec, now: dt.datetime,
                                                           settings: Settings) -> None:
    settings.EIPDASH_IPV4_HOURLY_USD = 0.005
    rng = random.Random(2026)
    other = LaunchSpec.objects.create(name="other", cluster=spec.cluster, tag_key="eipdash/pool", tag_value="other")
    random_history(spec, other, now, rng)

    def same(at: dt.datetime) -> None:
        report = capacity_report(spec, now=at)
        week, month, idle = reference(spec, at)
        assert (report.peak7d, report.peak30d) == (week, month)
        assert report.idle_month_usd == pytest.approx(idle * 0.005)
        assert peak_list(specs=[spec], now=at)[spec.pk] == (week, month)

    same(now)
    writes = _writes(spec, other, rng)
    for step in range(24):
        writes[step % len(writes)](now - 90 * MINUTE + step * MINUTE)
        same(now)
    same(now + 2 * DAY)  # the history's start moves on
    cache.clear()
    same(now + 2 * DAY)


def test_metrics_trust_ends_even_when_a_tied_node_keeps_moving(
        spec: LaunchSpec, now: dt.datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile trusted on its signals and swept again (a node tied to the spec moves every pass) must not be
    trusted anew: a row that leaves the history (here a deleted node) shows within TRUST_SECONDS at /metrics."""
    clock = [1_000_000.0]
    monkeypatch.setattr(selectors_demand, "time", types.SimpleNamespace(time=lambda: clock[0]))
    other = LaunchSpec.objects.create(name="other", cluster=spec.cluster, tag_key="eipdash/pool", tag_value="other")
    moved = make_node("m", spec=other, index=1, first_seen_at=now - 3 * DAY, last_seen_at=now)
    Assignment.objects.create(eip=make_eip(1), node=moved, launch_spec=spec, opened_at=now - 3 * DAY,
                              confirmed_at=now - 3 * DAY, closed_at=now - 2 * DAY, close_kind="moved")
    first = make_node("g1", spec=spec, index=2, state="gone", first_seen_at=now - 10 * DAY,
                      last_seen_at=now - 9 * DAY, deleted_at=now - 9 * DAY)
    make_node("g2", spec=spec, index=3, state="gone", first_seen_at=now - 10 * DAY,
              last_seen_at=now - 9 * DAY, deleted_at=now - 9 * DAY)
    assert peak_list(specs=[spec], now=now)[spec.pk][1].count == 2
    Node.objects.filter(pk=first.pk).delete()
    for step in range(1, 13):  # an hour of scrapes every 5 minutes while the tied node moves
        clock[0] += 300
        Node.objects.filter(pk=moved.pk).update(last_seen_at=now + step * 5 * dt.timedelta(minutes=1))
        found = peak_list(specs=[spec], now=now)[spec.pk][1].count
    assert found == 1


def test_a_history_moved_to_a_later_start_keeps_no_held_time_before_it(spec: LaunchSpec, now: dt.datetime) -> None:
    node = make_node("a", spec=spec, index=1, first_seen_at=now - 29 * DAY)
    Assignment.objects.create(eip=make_eip(1), node=node, launch_spec=spec, opened_at=now - 29 * DAY,
                              confirmed_at=now - 29 * DAY, closed_at=now - 28 * DAY, close_kind="released")
    capacity_report(spec, now=now)
    later = now + 10 * DAY
    capacity_report(spec, now=later)
    history = cache.get(f"capacity-history:{spec.pk}")
    assert history.since == selectors_demand.history_start(later)
    assert len(history.held.starts) == 0  # 8 days before the start: it would only grow the entry
