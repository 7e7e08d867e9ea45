"""A launch spec's capacity figures, read from the record: the pool against its peaks, the region's quota, the cost,
and where the nodes' traffic leaves. Only the database; the rules are pools/capacity.py's.

- pool / inUse / free: the spec's pool EIPs now (ElasticIP rows not gone that its selector selects), counted as
  pools/selectors.py pool_stats_list counts them: in use = claimed (an open assignment) or associated without a
  claim (a conflict), allowlist.address_state's in-use; free = the rest. minFree: LaunchSpec.min_free.
- peak7d / peak30d: the most of the spec's nodes that held or waited for an EIP at the same moment over the last 7
  and 30 days, and when (pools/capacity.py demand_end and peak). The nodes: Node rows of the spec, and nodes tied
  to it by assignments of its pool. shortfall: how far the 30-day peak is above the pool now (0 without history).
- quota: the region's EIP quota as last read (RegionFacts; None when unknown, with the read's error), the addresses
  allocated in the region per the last reading (pool and unmanaged), and what is left.
- cost: EIPDASH_IPV4_HOURLY_USD for each pool EIP that is not BYOIP; a month of it (730 hours); and the idle cost:
  the address-hours the billable pool EIPs spent free over the last 30 days, at the same price.
- egress: the spec's live nodes (listed, neither released nor gone) by where their subnet's traffic leaves
  (RegionFacts.egress): an internet gateway, a NAT gateway, no route. Nodes of an unknown subnet count only in
  nodes.

The demand (peaks and the chart) comes from pools/selectors_demand.py, which keeps it in the cache.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from django.db.models import (
    Count,
    Exists,
    IntegerField,
    Max,
    OuterRef,
    QuerySet,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from .allowlist import IN_USE, address_state
from .capacity import (
    HOURS_PER_MONTH,
    Coverage,
    DemandProfile,
    EgressCounts,
    Peak,
    egress_counts,
    idle_hours_covered,
    is_byoip,
    money,
    pool_sizes_at,
    sample_times,
    shortfall,
)
from .models import Assignment, ElasticIP, Event, LaunchSpec, Node, RegionFacts, UnmanagedAddress
from .pool_rule import in_pool, pool_filter
from .selectors import ENDED_NODE_STATES, launch_spec_list
from .selectors_demand import MONTH, demand_list, demand_profiles

__all__ = ["CapacityReport", "Peak", "QuotaFacts", "capacity_report", "capacity_report_list", "demand_series",
           "monthly_usd", "peak_list", "pool_cost_list", "region_quota_list"]

WEEK = dt.timedelta(days=7)
# What a region's quota says before its first read.
QUOTA_NOT_READ = "not read yet"
# The specs of one UNION query: SQLite allows 500 terms in one compound SELECT.
UNION_SPECS = 100


@dataclass(frozen=True)
class CapacityReport:
    spec: str
    pool: int
    in_use: int
    free: int
    min_free: int
    peak7d: Peak
    peak30d: Peak
    shortfall: int
    quota_limit: int | None
    quota_allocated: int
    quota_available: int | None
    quota_error: str
    quota_source: str
    hourly_usd: float
    month_usd: float
    idle_month_usd: float
    byoip: int
    egress_nodes: int
    via_igw: int
    via_nat: int
    no_route: int
    # The demand the peaks come from: the spec page draws its chart from it (demand_series) without reading again.
    demand: DemandProfile = field(default_factory=DemandProfile, compare=False, repr=False)

    def as_api(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "inUse": self.in_use,
            "free": self.free,
            "minFree": self.min_free,
            "peak7d": self.peak7d.count,
            "peak30d": self.peak30d.count,
            "shortfall": self.shortfall,
            "quota": {"limit": self.quota_limit, "allocated": self.quota_allocated,
                      "available": self.quota_available},
            "cost": {"hourlyUsd": money(self.hourly_usd, 4), "monthUsd": money(self.month_usd),
                     "idleMonthUsd": money(self.idle_month_usd), "byoip": self.byoip},
            "egress": {"nodes": self.egress_nodes, "viaInternetGateway": self.via_igw, "viaNat": self.via_nat,
                       "noRoute": self.no_route},
        }

    def shortfall_text(self) -> str:
        """The 30-day peak against the pool in one sentence, with the peak's time in UTC."""
        if self.peak30d.count == 0 or self.peak30d.at is None:
            return f"no node needed an EIP in the last 30 days; the pool has {self.pool}"
        when = self.peak30d.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        needed = f"the 30-day peak needed {self.peak30d.count}; the pool has {self.pool}"
        if self.shortfall:
            return f"{needed}: short by {self.shortfall} ({when})"
        return f"{needed}: {self.pool - self.peak30d.count} to spare ({when})"


@dataclass(frozen=True)
class QuotaFacts:
    """A region's EIP quota as last read (None: unknown, see error) and the addresses allocated there."""

    limit: int | None
    allocated: int
    error: str
    source: str

    @property
    def available(self) -> int | None:
        return None if self.limit is None else self.limit - self.allocated


def peak_list(*, specs: Sequence[LaunchSpec], now: dt.datetime | None = None) -> dict[int, tuple[Peak, Peak]]:
    """The 7-day and 30-day peaks of every spec by id, a fixed number of queries whatever the number of specs:
    /metrics on every scrape. A cached profile is trusted on its signals (selectors_demand.TRUST_SECONDS), not its
    whole stamp, whose counts read every row of the 30 days of every spec."""
    now = now or timezone.now()
    if not specs:
        return {}
    profiles = demand_list(specs, now=now, exact=False).profiles
    return {spec.pk: _peaks(profiles[spec.pk], now) for spec in specs}


def _peaks(profile: DemandProfile, now: dt.datetime) -> tuple[Peak, Peak]:
    return profile.peak(now - WEEK, now), profile.peak(now - MONTH, now)


def demand_series(
    spec: LaunchSpec, start: dt.datetime, end: dt.datetime, *, points: int = 60, report: CapacityReport | None = None
) -> list[tuple[dt.datetime, int, int]]:
    """(time, nodes demanding, pool size) per step: the demand-versus-pool chart. The pool size is reconstructed
    backwards from the current pool size through the spec's pool_joined (+1) / pool_left (-1) events
    (Event.launch_spec=spec.name); the demand from the same intervals as the peaks. `report`: the spec's report of
    this request, whose pool size and demand serve (the demand if it covers `start`) instead of reading them."""
    now = timezone.now()
    times = sample_times(start, end, points)
    demand = report.demand if report is not None and report.demand.covers(start) else None
    if demand is None:
        demand = demand_profiles([spec], now=now, start=start)[spec.pk]
    counts = demand.counts_at(times, now)
    current = report.pool if report is not None else pool_filter(ElasticIP.objects.filter(gone=False), spec).count()
    # Every change since the chart's start, those after its end included: the size is worked back from now.
    changes = [
        (timestamp, 1 if kind == Event.Kind.POOL_JOINED else -1)
        for timestamp, kind in Event.objects.filter(
            launch_spec=spec.name, kind__in=[Event.Kind.POOL_JOINED, Event.Kind.POOL_LEFT], timestamp__gt=start,
        ).order_by().values_list("timestamp", "kind")
    ]  # fmt: skip
    sizes = pool_sizes_at(current, changes, times)
    return list(zip(times, counts, sizes, strict=True))


# --- quota, cost and egress -----------------------------------------------------------------------------------


def region_quota_list(*, regions: Iterable[str]) -> dict[str, QuotaFacts]:
    """Per region: its quota as last read and the addresses allocated there (pool and unmanaged). Three queries."""
    wanted = sorted(set(regions))
    allocated: Counter[str] = Counter()
    for model in (ElasticIP.objects.filter(gone=False), UnmanagedAddress.objects.all()):
        allocated.update(dict(model.filter(region__in=wanted).order_by().values_list("region")
                              .annotate(n=Count("id")).values_list("region", "n")))
    facts = {row.region: row for row in RegionFacts.objects.filter(region__in=wanted)}
    quotas = {}
    for region in wanted:
        row = facts.get(region)
        limit = row.eip_quota if row is not None else None
        error = row.quota_error if row is not None else ""
        if limit is None and not error:
            error = QUOTA_NOT_READ
        quotas[region] = QuotaFacts(limit=limit, allocated=allocated[region], error=error,
                                    source=row.eip_quota_source if row is not None else "")
    return quotas


def pool_cost_list(*, specs: Sequence[LaunchSpec]) -> dict[int, tuple[int, int]]:
    """Per spec id: (billable pool EIPs, BYOIP pool EIPs). One query, grouped by tags and pool as in
    pool_stats_list, the membership worked out once per group."""
    counts: dict[int, tuple[int, int]] = {spec.pk: (0, 0) for spec in specs}
    by_region: dict[str, list[LaunchSpec]] = defaultdict(list)
    for spec in specs:
        by_region[spec.cluster.region].append(spec)
    groups = (ElasticIP.objects.filter(region__in=by_region.keys(), gone=False).order_by()
              .values_list("region", "tags", "public_ipv4_pool").annotate(n=Count("id")))
    for region, tags, public_pool, n in groups:
        for spec in by_region[region]:
            if in_pool(spec, region=region, tags=tags):
                billable, byoip = counts[spec.pk]
                counts[spec.pk] = (billable, byoip + n) if is_byoip(public_pool) else (billable + n, byoip)
    return counts


def monthly_usd(billable: int) -> float:
    """What this many billable addresses cost in a month (730 hours) at EIPDASH_IPV4_HOURLY_USD."""
    return settings.EIPDASH_IPV4_HOURLY_USD * billable * HOURS_PER_MONTH


def _union(parts: Sequence[QuerySet[Any]]) -> Iterable[tuple[Any, ...]]:
    """The rows of these querysets, UNION ALL, in as few queries as SQLite allows."""
    for i in range(0, len(parts), UNION_SPECS):
        first, *rest = parts[i:i + UNION_SPECS]
        yield from first.union(*rest, all=True) if rest else first


@dataclass(frozen=True)
class _PoolEip:
    """One EIP of a spec's pool as the report counts it."""

    id: int
    allocation_id: str
    first_seen_at: dt.datetime | None
    public_ipv4_pool: str
    state: str  # allowlist.address_state: in use (claimed or associated), or free


def _pool_eips(specs: Sequence[LaunchSpec]) -> dict[int, list[_PoolEip]]:
    """Per spec id, the EIPs of its pool (not gone, its pool rule: pool_filter): one UNION query of each spec's
    rule, so only the pools' rows are read, each with an open claim or not (one index probe)."""
    claimed = Exists(Assignment.objects.filter(eip=OuterRef("pk"), closed_at__isnull=True))
    parts = [pool_filter(ElasticIP.objects.filter(gone=False), spec).order_by()
             .annotate(spec_id=Value(spec.pk, output_field=IntegerField()), claimed=claimed)
             .values_list("spec_id", "id", "allocation_id", "first_seen_at", "public_ipv4_pool", "association_id",
                          "claimed")
             for spec in specs]
    eips: dict[int, list[_PoolEip]] = {spec.pk: [] for spec in specs}
    for spec_id, eip_id, allocation_id, first_seen, public_pool, association_id, has_claim in _union(parts):
        state = address_state(associated=bool(association_id), claimed=bool(has_claim))
        eips[spec_id].append(_PoolEip(eip_id, allocation_id, first_seen, public_pool, state))
    return eips


def _open_held(specs: Sequence[LaunchSpec]) -> dict[int, dict[int, list[dt.datetime]]]:
    """Per spec id and EIP id, since when its open assignments hold it: one query by index."""
    held: dict[int, dict[int, list[dt.datetime]]] = {spec.pk: defaultdict(list) for spec in specs}
    for spec_id, eip_id, since in cast(Iterable[tuple[int, int, dt.datetime]], (
            Assignment.objects.filter(launch_spec__in=specs, closed_at__isnull=True).order_by()
            .values_list("launch_spec_id", "eip_id", Coalesce("confirmed_at", "opened_at")))):
        held[spec_id][eip_id].append(since)
    return held


def _idle_usd(specs: Sequence[LaunchSpec], eips: dict[int, list[_PoolEip]], held_before: dict[int, Coverage],
              *, now: dt.datetime) -> dict[int, float]:
    """Per spec id: what its billable pool EIPs cost over the last 30 days while free. The time each was held:
    the settled history's closed assignments (cached) and the open ones (read now)."""
    idle: dict[int, float] = {}
    price = settings.EIPDASH_IPV4_HOURLY_USD
    open_held = _open_held(specs)
    joined = _joined_since(specs, now - MONTH)
    for spec in specs:
        held, held_now = held_before[spec.pk], open_held[spec.pk]
        address_hours = 0.0
        for eip in eips[spec.pk]:
            if is_byoip(eip.public_ipv4_pool):
                continue
            # The pool pays from when the EIP is its own: tagged into it (its last pool_joined of the window), seen
            # first, or the spec made, whichever came last; an EIP retagged from another pool is not idle here before.
            since = max(t for t in (now - MONTH, eip.first_seen_at, spec.created_at,
                                    joined.get((spec.name, eip.allocation_id))) if t is not None)
            address_hours += idle_hours_covered(since=since, now=now, held=held, key=eip.id,
                                                also=[(start, now) for start in held_now.get(eip.id, ())])
        idle[spec.pk] = address_hours * price
    return idle


def _joined_since(specs: Sequence[LaunchSpec], start: dt.datetime) -> dict[tuple[str, str], dt.datetime]:
    """(spec name, allocation id) -> its latest pool_joined since `start`: one query by the (kind, timestamp)
    index, a few rows (an EIP joins a pool when it is tagged or allocated, not on every pass)."""
    rows = (Event.objects.filter(kind=Event.Kind.POOL_JOINED, timestamp__gte=start,
                                 launch_spec__in=[spec.name for spec in specs])
            .order_by().values_list("launch_spec", "allocation_id").annotate(last=Max("timestamp")))
    return {(name, allocation_id): last for name, allocation_id, last in rows}


def _egress_list(specs: Sequence[LaunchSpec], egress_maps: dict[str, dict[str, Any]]) -> dict[int, EgressCounts]:
    """Per spec id: its live nodes by where their subnet's traffic leaves (egress_maps: RegionFacts.egress per
    region). One query, by the (launch_spec, deleted_at) index."""
    subnets: dict[int, Counter[str]] = defaultdict(Counter)
    rows = (Node.objects.filter(launch_spec__in=specs, deleted_at__isnull=True).exclude(state__in=ENDED_NODE_STATES)
            .order_by().values_list("launch_spec_id", "subnet_id").annotate(n=Count("id")))
    for spec_id, subnet_id, n in rows:
        subnets[spec_id][subnet_id] += n
    return {spec.pk: egress_counts(subnets[spec.pk], egress_maps.get(spec.cluster.region, {})) for spec in specs}


# --- the report -----------------------------------------------------------------------------------------------


def capacity_report_list(*, specs: Sequence[LaunchSpec] | None = None,
                         now: dt.datetime | None = None) -> list[CapacityReport]:
    """The reports of these specs (every spec by default), in their order: a fixed number of queries."""
    specs = list(specs) if specs is not None else launch_spec_list()
    if not specs:
        return []
    now = now or timezone.now()
    regions = {spec.cluster.region for spec in specs}
    demand = demand_list(specs, now=now, held=True)
    quotas = region_quota_list(regions=regions)
    eips = _pool_eips(specs)
    idle = _idle_usd(specs, eips, demand.held, now=now)
    egress_maps = dict(RegionFacts.objects.filter(region__in=regions).values_list("region", "egress"))
    egress = _egress_list(specs, {region: dict(by_subnet or {}) for region, by_subnet in egress_maps.items()})
    reports = []
    for spec in specs:
        pool = eips[spec.pk]
        in_use = sum(1 for eip in pool if eip.state == IN_USE)
        byoip = sum(1 for eip in pool if is_byoip(eip.public_ipv4_pool))
        billable = len(pool) - byoip
        peak7d, peak30d = _peaks(demand.profiles[spec.pk], now)
        quota = quotas[spec.cluster.region]
        counts = egress[spec.pk]
        reports.append(CapacityReport(
            spec=spec.name, pool=len(pool), in_use=in_use, free=len(pool) - in_use,
            min_free=spec.min_free, peak7d=peak7d, peak30d=peak30d, shortfall=shortfall(peak30d.count, len(pool)),
            quota_limit=quota.limit, quota_allocated=quota.allocated, quota_available=quota.available,
            quota_error=quota.error, quota_source=quota.source,
            hourly_usd=settings.EIPDASH_IPV4_HOURLY_USD * billable, month_usd=monthly_usd(billable),
            idle_month_usd=idle[spec.pk], byoip=byoip,
            egress_nodes=counts.nodes, via_igw=counts.via_igw, via_nat=counts.via_nat, no_route=counts.no_route,
            demand=demand.profiles[spec.pk],
        ))  # fmt: skip
    return reports


def capacity_report(spec: LaunchSpec, *, now: dt.datetime | None = None) -> CapacityReport:
    return capacity_report_list(specs=[spec], now=now)[0]
