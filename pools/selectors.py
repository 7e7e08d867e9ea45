"""Reads for the dashboard, the exports and /metrics. Only the database: never AWS or Kubernetes.

Every function here issues a fixed number of queries whatever the number of rows, so that no page
is N+1. Pool membership (region + tag selector) is matched in Python on one list of EIPs because a
JSON tag lookup per spec would cost one query per spec.
"""

from __future__ import annotations

import datetime as dt
import logging
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from functools import cached_property
from typing import Any, Generic, TypeVar, overload

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    F,
    Func,
    IntegerField,
    Max,
    Min,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.expressions import OrderBy, RawSQL
from django.utils import timezone

from . import dbfunctions, node_reason
from .alerts import Alert, alert_action, alert_key, alert_kind, alert_label
from .capacity import is_byoip, micros
from .drain import DrainHold
from .models import (
    Assignment,
    Cluster,
    ElasticIP,
    Event,
    EventCount,
    LaunchSpec,
    Node,
    ReassignRequest,
    RegionSequence,
    SpecFence,
    SpecPlan,
    UnmanagedAddress,
)
from .planner import NodeView
from .pool_rule import in_pool, labels_match, pool_filter, specs_selecting
from .snapshot import NODE_COLUMNS, neighbour_specs, node_view
from .vocabulary import LIVE_STATES

logger = logging.getLogger(__name__)

ALERT_KINDS = (Event.Kind.POOL_EXHAUSTED, Event.Kind.POOL_LOW, Event.Kind.CONFLICT, Event.Kind.ERROR,
               Event.Kind.EGRESS_NOT_VIA_EIP)
EIP_STATES = ("free", "assigned", "conflict", "gone")
# Not a state of a pool EIP: the inventory's listing of the region's other EIPs (UnmanagedAddress rows).
UNMANAGED = "unmanaged"
# The sorts an unmanaged listing can honour (it has no node, spec or state of ours); the others sort by IP.
UNMANAGED_SORTS = ("ip", "-ip", "allocation", "-allocation", "seen", "-seen", "region", "-region")
EIP_SORTS = {
    "ip": ("public_ip", "allocation_id"),
    "-ip": ("-public_ip", "-allocation_id"),
    "allocation": ("allocation_id",),
    "-allocation": ("-allocation_id",),
    "node": ("current_node", "public_ip"),
    "-node": ("-current_node", "public_ip"),
    "seen": ("last_seen_at", "public_ip"),
    "-seen": ("-last_seen_at", "public_ip"),
    # state_rank: free, assigned, conflict, gone (see eip_order)
    "state": ("state_rank", "public_ip"),
    "-state": ("-state_rank", "public_ip"),
    "spec": ("current_spec", "public_ip"),
    "-spec": ("-current_spec", "public_ip"),
    "region": ("region", "public_ip"),
    "-region": ("-region", "public_ip"),
}
NODE_STATES = tuple(value for value, _label in Node.State.choices)


def _contains_any(q: str, *fields: str) -> Q:
    """The search boxes: the text anywhere in any of these fields, case-insensitively."""
    found = Q()
    for name in fields:
        found |= Q(**{f"{name}__icontains": q})
    return found


def _open_assignments() -> QuerySet[Assignment]:
    return Assignment.objects.filter(closed_at__isnull=True)


def eip_annotated() -> QuerySet[ElasticIP]:
    """EIPs with their current node and spec from the open assignment (one subquery each, no N+1)."""
    current = _open_assignments().filter(eip=OuterRef("pk"))
    return ElasticIP.objects.annotate(
        has_open=Exists(current),
        current_node=Subquery(current.values("node__name")[:1]),
        current_cluster=Subquery(current.values("node__cluster__name")[:1]),
        current_instance=Subquery(current.values("node__instance_id")[:1]),
        current_spec=Subquery(current.values("launch_spec__name")[:1]),
        current_since=Subquery(current.values("opened_at")[:1]),
    )


def eip_state(eip: ElasticIP | UnmanagedAddress) -> str:
    """free / assigned / conflict / gone, for an EIP from eip_annotated(); unmanaged for an UnmanagedAddress."""
    if isinstance(eip, UnmanagedAddress):
        return UNMANAGED
    if eip.gone:
        return "gone"
    if getattr(eip, "has_open", False):
        return "assigned"
    # Associated in AWS but with no claim of ours: on a foreign instance, or waiting for adoption.
    if eip.association_id:
        return "conflict"
    return "free"


def _eip_state_q(state: str) -> Q:
    if state == "gone":
        return Q(gone=True)
    if state == "assigned":
        return Q(gone=False, has_open=True)
    if state == "conflict":
        return Q(gone=False, has_open=False) & ~Q(association_id="")
    if state == "free":
        return Q(gone=False, has_open=False, association_id="")
    return Q()


@dataclass
class PoolStats:
    spec: LaunchSpec
    pool_size: int = 0
    in_use: int = 0
    free: int = 0
    conflict: int = 0
    waiting_nodes: int = 0
    draining_holding: int = 0
    nodes: int = 0
    alerts: list[str] = field(default_factory=list)
    # Open assignments of the spec's nodes: what a disabled spec still has to give back before deletion.
    held: int = 0
    # Pool EIPs of a pool brought to AWS (BYOIP, capacity.is_byoip): not billed by the hour.
    byoip: int = 0

    def count_eips(self, n: int, *, state: str, byoip: bool) -> None:
        """n EIPs of the pool in one of eip_state()'s states: assigned (an open claim), conflict (associated
        without one), free."""
        self.pool_size += n
        if byoip:
            self.byoip += n
        if state == "assigned":
            self.in_use += n
        elif state == "conflict":
            self.conflict += n
        else:
            self.free += n

    @property
    def use_percent(self) -> int:
        return round(100 * self.in_use / self.pool_size) if self.pool_size else 0

    @property
    def exhausted(self) -> bool:
        return self.waiting_nodes > 0 and self.free == 0

    @cached_property
    def problems(self) -> list[SpecProblem]:
        """This spec's ongoing problems (spec_problem_list on this row: no query)."""
        return spec_problem_list(stats=[self])

    @property
    def misconfigurations(self) -> list[SpecProblem]:
        return [problem for problem in self.problems if problem.misconfiguration]

    @property
    def status(self) -> str:
        """The spec's state in one word, the one every page shows (the tiles' and tables' data-status):

        - misconfigured: it cannot work as configured (MISCONFIGURATION_CODES), whatever else is true;
        - draining: disabled on purpose and still holding EIPs, which go back by the release rule; drained: it
          holds none (it can be deleted);
        - exhausted: nodes wait and the pool has no free EIP;
        - attention: another ongoing problem (a conflict, a failing step);
        - ok.
        """
        if self.misconfigurations:
            return "misconfigured"
        if not self.spec.enabled:
            return "draining" if self.held else "drained"
        if any(problem.code == "pool_exhausted" for problem in self.problems):
            return "exhausted"
        return "attention" if self.problems else "ok"


def launch_spec_list() -> list[LaunchSpec]:
    return list(LaunchSpec.objects.select_related("cluster"))


def cluster_list() -> list[Cluster]:
    """The clusters a launch spec may name, by name."""
    return list(Cluster.objects.order_by("name"))


def launch_spec_get(*, name: str) -> LaunchSpec | None:
    return LaunchSpec.objects.select_related("cluster").filter(name=name).first()


# Not a node state: marks the rows of pool_stats_list's node query that are holding nodes.
HOLDING = "~holding"


def pool_stats_list(*, specs: Sequence[LaunchSpec] | None = None) -> list[PoolStats]:
    """Pool size / in use / free per spec, and its waiting and draining nodes. Two queries.

    Every query reads only live rows by an index, whatever the history holds (100,000s of deleted nodes
    and their closed assignments): the open assignments by the partial unique indexes (closed_at IS NULL),
    the live node states by (launch_spec, state), the EIP snapshot (one row per EIP). Rows are fetched as
    tuples, not model instances: the overview polls this every few seconds per open tab.
    """
    specs = list(specs) if specs is not None else launch_spec_list()
    if not specs:
        return []
    stats = {spec.pk: PoolStats(spec=spec, alerts=[str(a) for a in spec.active_alerts or []]) for spec in specs}
    by_region: dict[str, list[LaunchSpec]] = defaultdict(list)
    for spec in specs:
        by_region[spec.cluster.region].append(spec)
    # The EIPs grouped by tag set, region and state in the database: a pool's EIPs mostly share their tags,
    # so a few hundred groups come back instead of thousands of rows, and membership (in_pool's rule) is
    # worked out once per group. The state is eip_state()'s, in one column: assigned (an open claim), conflict
    # (associated without one), free. The tags first: SQLite then reads the table in one scan, not by the region
    # index with a row lookup per EIP (9 ms at 10,000 EIPs, against 13 ms).
    state = Case(When(Exists(_open_assignments().filter(eip=OuterRef("pk"))), then=Value("assigned")),
                 When(~Q(association_id=""), then=Value("conflict")), default=Value("free"),
                 output_field=CharField())
    eips = (
        ElasticIP.objects.filter(region__in=by_region.keys(), gone=False).order_by()
        .annotate(state=state)
        .values_list("tags", "region", "state", "public_ipv4_pool").annotate(n=Count("id"))
    )
    for tags, region, state, public_pool, n in eips:
        byoip = is_byoip(public_pool)
        for spec in by_region[region]:
            if in_pool(spec, region=region, tags=tags):
                stats[spec.pk].count_eips(n, state=state, byoip=byoip)
    _count_nodes(stats, _node_and_holding_counts(specs))
    return [stats[spec.pk] for spec in specs]


def _count_nodes(stats: dict[int, PoolStats], counts: Iterable[tuple[int | None, str, int]]) -> None:
    """The live nodes by state, and the nodes holding an open assignment by spec and draining flag
    (_node_and_holding_counts' rows), into the specs' rows."""
    for key, state, n in counts:
        if state == HOLDING:
            if key is None or key // 2 not in stats:
                continue
            spec_id, draining = divmod(key, 2)
            stats[spec_id].held += n
            if draining:
                stats[spec_id].draining_holding += n
        elif key in stats:
            stats[key].nodes += n
            if state == Node.State.WAITING:
                stats[key].waiting_nodes += n


def _node_and_holding_counts(specs: Sequence[LaunchSpec]) -> list[tuple[int | None, str, int]]:
    """(spec id, live state, nodes) for the specs' live nodes, and (spec id * 2 + draining, HOLDING, nodes) for
    the nodes holding an open assignment (one per node, so counting them counts the nodes)."""
    if len(specs) == 1:
        return _counts_of_one_spec(specs[0])
    counted = _counts_from_live_nodes(specs)
    if counted is not None:
        return counted
    return _counts_by_open_assignment(specs)


def _counts_of_one_spec(spec: LaunchSpec) -> list[tuple[int | None, str, int]]:
    """One spec (its page, its delete page, the reassign dialog): its nodes of every state grouped by state,
    draining flag and whether the node holds an open assignment (a probe of the partial index of open
    assignments per node). The live ones count by state; the holding ones by draining flag whatever their state,
    as _counts_by_open_assignment counts them (an ended node of the spec that still holds one counts until the
    next pass releases it). One query by the (launch_spec, state, draining) index: reading the node of every
    open assignment of every spec to keep this spec's took 7 ms at 10,000 nodes, this 4 ms."""
    live = [state for state in NODE_STATES if state not in (Node.State.GONE, Node.State.RELEASED)]
    rows = (
        Node.objects.filter(launch_spec=spec).order_by()
        .annotate(holds=Exists(_open_assignments().filter(node=OuterRef("pk"))))
        .values_list("state", "draining", "holds").annotate(n=Count("id"))
    )
    counts: list[tuple[int | None, str, int]] = []
    holders: Counter[int] = Counter()
    for state, draining, holds, n in rows:
        if state in live:
            counts.append((spec.pk, state, n))
        if holds:
            holders[spec.pk * 2 + (1 if draining else 0)] += n
    return counts + [(key, HOLDING, n) for key, n in holders.items()]


# Not a node state: the row of _counts_from_live_nodes that counts every open assignment.
_OPEN = "~open"


def _counts_from_live_nodes(specs: Sequence[LaunchSpec]) -> list[tuple[int | None, str, int]] | None:
    """The counts from the live nodes alone: by spec, state, draining flag and whether the node holds an open
    assignment (the (launch_spec, state, draining) index, and a probe of the small partial index of open
    assignments per node), beside the number of open assignments. When every open assignment is on a live node
    of these specs (the two numbers agree), that is all of them: one query of about 5 ms at 10,000 nodes, where
    reading the node of every open assignment took 15-20 ms. None otherwise (an ended node, or a node of no spec
    or of another spec, still holds one: the next pass releases it): the caller counts by open assignment."""
    live = [state for state in NODE_STATES if state not in (Node.State.GONE, Node.State.RELEASED)]
    nodes = (
        Node.objects.filter(launch_spec__in=specs, state__in=live).order_by()
        .annotate(holds=Exists(_open_assignments().filter(node=OuterRef("pk"))))
        .values_list("launch_spec_id", "state", "draining", "holds").annotate(n=Count("id"))
    )
    opened = (
        _open_assignments().order_by()
        .annotate(key=Value(None, output_field=IntegerField()), part=Value(_OPEN),
                  flag=Value(False, output_field=BooleanField()), holds=Value(False, output_field=BooleanField()))
        .values_list("key", "part", "flag", "holds").annotate(n=Count("id"))
    )
    counts: list[tuple[int | None, str, int]] = []
    holders: Counter[int] = Counter()
    open_total = 0
    for spec_id, state, draining, holds, n in nodes.union(opened, all=True):
        if state == _OPEN:
            open_total += n
            continue
        counts.append((spec_id, state, n))
        if holds:
            holders[spec_id * 2 + (1 if draining else 0)] += n
    if sum(holders.values()) != open_total:
        return None
    return counts + [(key, HOLDING, n) for key, n in holders.items()]


def _counts_by_open_assignment(specs: Sequence[LaunchSpec]) -> list[tuple[int | None, str, int]]:
    """The live nodes of the specs by state, counted by the (launch_spec, state, draining) index. Then one row per
    open assignment with its node's spec and draining flag from a correlated subquery: one index probe per open
    assignment, where a plain join makes PostgreSQL scan every node row, the deleted ones included (grouped in
    the database, the subquery runs twice per row, and PostgreSQL's estimate passes its JIT threshold)."""
    live = [state for state in NODE_STATES if state not in (Node.State.GONE, Node.State.RELEASED)]
    node_counts = (
        Node.objects.filter(launch_spec__in=specs, state__in=live).order_by()
        .values_list("launch_spec_id", "state")
        .annotate(flag=Value(False, output_field=BooleanField()), n=Count("id"))
    )
    # The holding node's spec and draining flag in one probe: spec id * 2 + draining.
    node_code = Node.objects.filter(pk=OuterRef("node_id")).order_by().annotate(
        code=F("launch_spec_id") * 2 + Case(When(draining=True, then=Value(1)), default=Value(0)))
    holding = (
        _open_assignments().order_by()
        .annotate(node_code=Subquery(node_code.values("code")[:1]),
                  part=Value(HOLDING, output_field=CharField()),
                  flag=Value(False, output_field=BooleanField()),
                  n=Value(1, output_field=IntegerField()))
        .values_list("node_code", "part", "flag", "n")
    )
    return [(key, state, n) for key, state, _flag, n in node_counts.union(holding, all=True)]


def pool_stats_get(*, spec: LaunchSpec) -> PoolStats:
    return pool_stats_list(specs=[spec])[0]


@dataclass(frozen=True)
class AlertGroup:
    """Alert events of one spec and kind in the window: one row on the overview instead of one per event.

    Ongoing while the spec's active_alerts hold a key of that kind (pools/alerts.py), resolved otherwise: at
    the time of the pass that no longer saw it (resolved_at, LaunchSpec.alerts_ended), or, for an end older than
    that record keeps, no later than the spec's last pass (resolved_by).
    """

    spec_name: str
    kind: str
    count: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    last_reason: str
    last_node: str = ""
    ongoing: bool = False
    # The conditions still true: the spec's active alert keys of this kind (empty for a resolved alert).
    keys: list[str] = field(default_factory=list)
    resolved_by: dt.datetime | None = None
    resolved_at: dt.datetime | None = None

    @property
    def status(self) -> str:
        return "ongoing" if self.ongoing else "resolved"

    @property
    def labels(self) -> list[str]:
        """The conditions still true, in words."""
        return [alert_label(key) for key in self.keys]

    @property
    def conditions(self) -> list[str]:
        """The keys worth naming beside the kind: "pool exhausted" would only say the kind again."""
        return [key for key in self.keys if key != alert_key(Alert.POOL_EXHAUSTED)]

    @property
    def reason_words(self) -> list[tuple[str, bool]]:
        return text_words(self.last_reason)


def text_words(text: str) -> list[tuple[str, bool]]:
    """A sentence as (word, is an id) pairs, for a page to keep each id whole: a node name, an instance or
    allocation id, an IP (a word with "-", "." or ":" in it) must not wrap at its own hyphens or dots
    (ip-10-0-1-7.eu-west-\\n1.compute.internal); the line breaks between words instead."""
    return [(word, any(mark in word for mark in "-.:")) for word in text.split()]


def alert_group_list(*, since: dt.datetime | None = None, stats: Sequence[PoolStats] | None = None
                     ) -> list[AlertGroup]:
    """Alert events of the last hour grouped by (spec, kind), each marked ongoing or resolved by the spec's
    active alerts (from the rows of pool_stats_list(); without them, one query for the specs). Ongoing first,
    then the newest. An alert still true whose events are older than the window has a row too (no events in
    it). One query: the latest reason and node of each group are correlated subqueries, served by the
    (launch_spec, timestamp) index."""
    since = since or timezone.now() - dt.timedelta(hours=1)
    window = Event.objects.filter(kind__in=ALERT_KINDS, timestamp__gte=since)
    latest = window.filter(launch_spec=OuterRef("launch_spec"), kind=OuterRef("kind")).order_by("-timestamp", "-id")
    groups = (
        window.order_by()
        .values("launch_spec", "kind")
        .annotate(n=Count("id"), first=Min("timestamp"), last=Max("timestamp"),
                  reason=Subquery(latest.values("reason")[:1]), node=Subquery(latest.values("node")[:1]))
        .order_by("-last")[:50]
    )
    specs = [row.spec for row in stats] if stats is not None else launch_spec_list()
    # The conditions still true per (spec, kind), and the spec's last pass.
    active: dict[tuple[str, str], list[str]] = defaultdict(list)
    last_pass: dict[str, dt.datetime | None] = {}
    ended: dict[tuple[str, str], dt.datetime] = {}
    for spec in specs:
        last_pass[spec.name] = spec.last_reconciled_at
        for key, when in (spec.alerts_ended or {}).items():
            try:
                at = dt.datetime.fromisoformat(str(when))
            except ValueError:
                continue  # written by another version, or damaged: that row says "resolved" without a time
            ended[(spec.name, alert_kind(key))] = max(at, ended.get((spec.name, alert_kind(key)), at))
        for key in sorted(str(key) for key in spec.active_alerts or []):
            active[(spec.name, alert_kind(key))].append(key)
    rows = []
    for group in groups:
        keys = active.pop((group["launch_spec"], group["kind"]), [])
        rows.append(AlertGroup(
            spec_name=group["launch_spec"], kind=group["kind"], count=group["n"], first_seen=group["first"],
            last_seen=group["last"], last_reason=group["reason"] or "", last_node=group["node"] or "",
            ongoing=bool(keys), keys=keys, resolved_by=None if keys else last_pass.get(group["launch_spec"]),
            resolved_at=None if keys else ended.get((group["launch_spec"], group["kind"]))))
    # Still true, with no event in the window: the alert started earlier (one event per episode).
    rows += [AlertGroup(spec_name=name, kind=kind, count=0, first_seen=None, last_seen=None, last_reason="",
                        ongoing=True, keys=keys)
             for (name, kind), keys in sorted(active.items())]
    # Ongoing first; each part newest first (sorted is stable: the query's order stays within a part).
    return sorted(rows, key=lambda row: not row.ongoing)


# A spec is stale when its last successful pass is older than this many reconcile intervals.
STALE_PASS_INTERVALS = 3


@dataclass(frozen=True)
class SpecProblem:
    """An ongoing problem of one spec (a misconfiguration, a broken dependency, an exhausted pool, an alert
    that still holds), with what the operator should do about it."""

    spec: LaunchSpec
    code: str
    title: str
    action: str

    @property
    def misconfiguration(self) -> bool:
        """The spec cannot work as configured: its status says "misconfigured" and its plan is blocked."""
        return self.code in MISCONFIGURATION_CODES

    @property
    def title_words(self) -> list[tuple[str, bool]]:
        return text_words(self.title)


# Every problem code, as /metrics labels them (eipdash_launch_spec_problem). "conflict", "error", "pool_low" and
# "egress_not_via_eip" are ongoing alerts (pools/alerts.py) other than those with a code of their own
# (pool_exhausted, read_failing). A disabled spec that still holds EIPs is no problem: it drains on purpose
# (PoolStats.status says "draining").
SPEC_PROBLEM_CODES = ("empty_pool", "no_kube_context", "stale_pass", "read_failing", "pool_exhausted", "conflict",
                      "error", "pool_low", "egress_not_via_eip")
# The alerts listed one problem per key, in their own words (pools/alerts.py).
_KEYED_PROBLEM_KINDS = frozenset({"conflict", "error", "pool_low", "egress_not_via_eip"})
MISCONFIGURATION_CODES = frozenset({"empty_pool", "no_kube_context", "stale_pass", "read_failing"})


def spec_problem_list(*, stats: Sequence[PoolStats], now: dt.datetime | None = None) -> list[SpecProblem]:
    """Every ongoing problem of each spec: what the overview's "Needs attention" panel lists and counts.

    No query: it reads the rows of pool_stats_list(). /metrics exposes it as
    eipdash_launch_spec_problem{launch_spec, problem} 1 (one series per spec and code).
    """
    now = now or timezone.now()
    interval = dt.timedelta(seconds=max(1, settings.EIPDASH_RECONCILE_SECONDS))
    problems: list[SpecProblem] = []
    for row in stats:
        problems += _setup_problems(row, now=now, interval=interval) + _alert_problems(row)
    return problems


def _setup_problems(row: PoolStats, *, now: dt.datetime, interval: dt.timedelta) -> list[SpecProblem]:
    """What keeps a spec from working as configured: an empty pool, no kube context, no recent pass."""
    problems: list[SpecProblem] = []
    spec = row.spec
    selector = spec.selector_text()
    # A disabled spec's pool may be emptied on purpose (untagged before the spec is deleted).
    if row.pool_size == 0 and spec.enabled:
        problems.append(SpecProblem(
            spec, "empty_pool", f"No EIP in {spec.cluster.region} matches the selector {selector}",
            f"Tag the pool's Elastic IPs {selector} in {spec.cluster.region}, or correct the selector: "
            "until then no node of this spec can get an EIP and new nodes stay tainted."))
    if (not spec.cluster.kube_context and not spec.cluster.kubeconfig
            and spec.cluster.name != settings.EIPDASH_CLUSTER_NAME):
        problems.append(SpecProblem(
            spec, "no_kube_context", f"Cluster {spec.cluster.name} has no kube context",
            "eipdash falls back to the current kube context, which may be another cluster. Set the "
            f"cluster's kube context (Admin → Clusters, or recreate it with manage.py cluster add "
            f"{spec.cluster.name} --kube-context …)."))
    if (spec.enabled or row.held) and _pass_is_stale(spec, now=now, interval=interval):
        last = spec.last_successful_pass_at
        problems.append(SpecProblem(
            spec, "stale_pass",
            "No successful pass yet" if last is None else "Last successful pass is too old",
            f"Passes run every {settings.EIPDASH_RECONCILE_SECONDS} s: check that the Celery worker and "
            "Celery beat are running and can reach Redis (manage.py worker_alive)."))
    return problems


def _alert_problems(row: PoolStats) -> list[SpecProblem]:
    """The spec's alerts still true: a failing read, an exhausted pool, every conflict and error."""
    spec = row.spec
    selector = spec.selector_text()
    active = [str(key) for key in spec.active_alerts or []]
    problems: list[SpecProblem] = []
    read_failed = alert_key(Alert.READ_FAILED)
    # "read-failed", or one of its subjects ("read-failed:kubeconfig": the cluster's file cannot be loaded).
    if any(key == read_failed or key.startswith(f"{read_failed}:") for key in active):
        problems.append(SpecProblem(
            spec, "read_failing", "Reading AWS or Kubernetes fails",
            "Nothing is assigned or released until it reads again. See the latest error in the history "
            "(credentials, IAM permissions, kube context, throttling)."))
    exhausted_key = alert_key(Alert.POOL_EXHAUSTED)
    if spec.enabled and (row.exhausted or exhausted_key in active):
        waiting = row.waiting_nodes
        problems.append(SpecProblem(
            spec, "pool_exhausted",
            f"Pool exhausted: {waiting} node{' waits' if waiting == 1 else 's wait'} for an EIP and none is free"
            if waiting else "Pool exhausted",
            f"Add EIPs to the pool (allocate them in {spec.cluster.region} and tag them {selector}): waiting "
            "nodes stay tainted, without workload pods, until an EIP is free. A draining node gives its EIP "
            "back once its workload pods are gone."))
    for key in sorted(active):
        kind = alert_kind(key)
        if kind in _KEYED_PROBLEM_KINDS and not key.startswith(read_failed):
            label = alert_label(key)
            problems.append(SpecProblem(spec, kind, label[:1].upper() + label[1:], alert_action(key)))
    return problems


def _pass_is_stale(spec: LaunchSpec, *, now: dt.datetime, interval: dt.timedelta) -> bool:
    limit = STALE_PASS_INTERVALS * interval
    if spec.last_successful_pass_at is None:
        # A spec created a moment ago has had no chance to run yet.
        return spec.created_at is not None and now - spec.created_at > limit
    return now - spec.last_successful_pass_at > limit


def chart_data_start() -> dt.datetime | None:
    """When the record begins: the first event ever recorded (the timestamp index answers it at once)."""
    return Event.objects.order_by("timestamp").values_list("timestamp", flat=True).first()


@dataclass(frozen=True)
class UseSeries:
    spec_name: str
    pool_size: int
    points: list[tuple[dt.datetime, int]]


def pool_use_series(
    *, stats: Sequence[PoolStats], now: dt.datetime | None = None, hours: int = 24, step_minutes: int = 30
) -> list[UseSeries]:
    """EIPs in use per spec over the last `hours`, sampled every `step_minutes`, from Assignment intervals.

    The spans are every assignment that overlaps the window (the open ones and those closed in the window, by
    the (launch_spec, closed_at) index), read once per version of those rows (_use_spans). Counting happens
    in Python because the overlap test is awkward to express portably in SQL: at each sample, the spans
    opened by then minus those closed by then, by binary search on the sorted ends.
    """
    now = now or timezone.now()
    start = now - dt.timedelta(hours=hours)
    samples = [start + dt.timedelta(minutes=step_minutes * i) for i in range(hours * 60 // step_minutes + 1)]
    spec_ids = sorted(row.spec.pk for row in stats)
    intervals = _use_spans(spec_ids, start, hours)
    # The samples in integer microseconds, as the spans are kept: the same order, so the same counts.
    sample_micros = [micros(t) for t in samples]
    series = []
    for row in stats:
        before, opened_times, closed_times = intervals.get(row.spec.pk, (0, _micros_array(), _micros_array()))
        # In use at t: opened <= t and not (closed <= t). A span closed by t was opened by t too. Every
        # sample is at or after the cached window's start, so spans opened before it count at every sample,
        # and a span closed between that start and `start` adds one and removes one at every sample.
        points = [(t, before + bisect_right(opened_times, m) - bisect_right(closed_times, m))
                  for t, m in zip(samples, sample_micros, strict=True)]
        series.append(UseSeries(spec_name=row.spec.name, pool_size=row.pool_size, points=points))
    return series


# Spans per spec: (opened before the window's start, sorted opening times inside it, sorted closing times), the
# times in integer microseconds (capacity.micros): an array reads back from the cache in microseconds, where a
# list of thousands of datetimes took a millisecond to unpickle on every request.
_UseSpans = dict[int, tuple[int, "array[int]", "array[int]"]]


def _micros_array(values: Iterable[int] = ()) -> array[int]:
    return array("q", values)


def _use_spans(spec_ids: list[int], start: dt.datetime, hours: int) -> _UseSpans:
    """The assignments overlapping [start, now] per spec, cached under the record's version.

    The overview and its 5-second poll (every open tab) asked for the same thousands of spans each time,
    and converting their timestamps was most of the page's time. The cache window starts at `start`
    floored to the hour, so one entry serves every request of that hour (the counting in the caller is
    exact for any sample at or after it). The key holds a version of the rows that could change the
    answer, read by one query over the same index ranges: the highest assignment id (a new
    assignment), the open ones (a close takes one away) and those closed since the window's start (a
    close adds one, a deletion by retention takes one away). Nothing else rewrites these columns, so a
    write shows on the next request; never a time-only expiry that could show a stale pool. One entry per
    range and set of specs, replaced when its stamp changes, so the cache holds a handful of entries
    (a 7-day range is a few MB at 100,000 assignments), not one per version.
    """
    window = start.replace(minute=0, second=0, microsecond=0)
    overlapping = Assignment.objects.filter(launch_spec_id__in=spec_ids).filter(
        Q(closed_at__isnull=True) | Q(closed_at__gte=window)
    )
    # The open ones and those closed since the window's start as two ranges of the (launch_spec, closed_at)
    # index, one aggregate row each in one UNION: their OR made SQLite merge the two ranges' row ids first (3 ms
    # at 10,000 open assignments, this 1 ms).
    parts = [Assignment.objects.filter(launch_spec_id__in=spec_ids).filter(condition).order_by()
             .annotate(part=Value(part, output_field=IntegerField()))
             .values("part").annotate(last=Max("pk"), n=Count("pk")).values_list("part", "last", "n")
             for part, condition in ((0, Q(closed_at__isnull=True)), (1, Q(closed_at__gte=window)))]
    found = {part: (last, n) for part, last, n in parts[0].union(parts[1], all=True)}
    (last_open, opened_n), (last_closed, closed_n) = found.get(0, (None, 0)), found.get(1, (None, 0))
    key = f"pool-use-spans:{hours}:{','.join(map(str, spec_ids))}"
    stamp = (window.isoformat(), max((pk for pk in (last_open, last_closed) if pk is not None), default=None),
             opened_n, closed_n)
    cached: tuple[tuple[object, ...], _UseSpans] | None = cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    # The opening time only of spans opened inside the window: an older one is open at every sample, and
    # not converting thousands of timestamps it does not need is most of this function's time.
    rows = (
        overlapping.order_by()
        .annotate(opened_inside=Case(When(opened_at__gte=window, then=F("opened_at")), default=None,
                                     output_field=DateTimeField()))
        .values_list("launch_spec_id", "opened_inside", "closed_at")
    )  # fmt: skip
    before: Counter[int] = Counter()
    opened: dict[int, list[int]] = defaultdict(list)
    closed: dict[int, list[int]] = defaultdict(list)
    for spec_id, opened_at, closed_at in rows:
        if opened_at is None:
            before[spec_id] += 1
        else:
            opened[spec_id].append(micros(opened_at))
        if closed_at is not None:
            closed[spec_id].append(micros(closed_at))
    spans: _UseSpans = {
        spec_id: (before[spec_id], _micros_array(sorted(opened[spec_id])), _micros_array(sorted(closed[spec_id])))
        for spec_id in set(before) | set(opened) | set(closed)
    }
    cache.set(key, (stamp, spans), timeout=3600)
    return spans


TIME_TO_EIP_BUCKETS: tuple[tuple[str, float], ...] = (
    ("<5s", 5),
    ("5–10s", 10),
    ("10–20s", 20),
    ("20–30s", 30),
    ("30–60s", 60),
    ("1–2m", 120),
    ("2–5m", 300),
    (">5m", float("inf")),
)


@dataclass(frozen=True)
class Histogram:
    buckets: list[tuple[str, int]]
    count: int
    p50: float | None
    p95: float | None


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class _ReadyWait(Func):
    """eip_ready_at - first_seen_at, exact to the microsecond: a timedelta (PostgreSQL's interval), or on
    SQLite an integer of microseconds from the stored text ('YYYY-MM-DD HH:MM:SS[.ffffff]', UTC), whole
    seconds by strftime and the fraction by its digits. Django's own duration expression on SQLite calls a
    Python function per row that parses both timestamps, as slow as converting them here."""

    template = "(%(expressions)s)"
    arg_joiner = " - "
    output_field = DurationField()

    def __init__(self) -> None:
        super().__init__(F("eip_ready_at"), F("first_seen_at"))

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple[Any, ...]]:
        ready, ready_params = compiler.compile(self.source_expressions[0])
        first, first_params = compiler.compile(self.source_expressions[1])
        sql = (
            # strftime on the whole seconds only: SQLite rounds a time to the millisecond first, so
            # 03.999579 would count as 04.
            f"((CAST(strftime('%%s', substr({ready}, 1, 19)) AS INTEGER)"
            f" - CAST(strftime('%%s', substr({first}, 1, 19)) AS INTEGER)) * 1000000"
            f" + CAST(substr({ready}, 21, 6) AS INTEGER) - CAST(substr({first}, 21, 6) AS INTEGER))"
        )
        return sql, (*ready_params, *first_params, *ready_params, *first_params)

    def get_db_converters(self, connection: Any) -> list[Any]:
        return []  # SQLite's integer microseconds stay an integer (the caller reads both forms)


def time_to_eip_histogram(*, since: dt.datetime | None = None, spec: LaunchSpec | None = None) -> Histogram:
    """How long new nodes waited for their EIP (first seen → EIP confirmed), nodes ready in the window."""
    since = since or timezone.now() - dt.timedelta(hours=24)
    qs = Node.objects.filter(eip_ready_at__isnull=False, eip_ready_at__gte=since)
    if spec is not None:
        qs = qs.filter(launch_spec=spec)
    # The wait computed by the database: converting two timestamps per node was most of this function's
    # time on the overview (thousands of nodes a day at scale).
    waits = qs.order_by().annotate(wait=_ReadyWait()).values_list("wait", flat=True)
    seconds = sorted(
        max(0.0, wait.total_seconds() if isinstance(wait, dt.timedelta) else wait / 1_000_000)
        for wait in waits
        if wait is not None
    )
    # Each bucket holds the values below its upper bound and at or above the previous one's.
    uppers = [upper for _label, upper in TIME_TO_EIP_BUCKETS]
    edges = [0] + [bisect_left(seconds, upper) for upper in uppers]
    return Histogram(
        buckets=[(label, edges[index + 1] - edges[index]) for index, (label, _) in enumerate(TIME_TO_EIP_BUCKETS)],
        count=len(seconds),
        p50=_percentile(seconds, 0.5),
        p95=_percentile(seconds, 0.95),
    )


# --- EIPs ----------------------------------------------------------------------------------------


def eip_list(
    *,
    q: str = "",
    spec: LaunchSpec | None = None,
    state: str = "",
    sort: str = "ip",
) -> QuerySet[ElasticIP]:
    qs = eip_annotated()
    if spec is not None:
        qs = pool_filter(qs, spec)
    if state in EIP_STATES:
        qs = qs.filter(_eip_state_q(state))
    q = q.strip()
    if q:
        node_match = (
            _open_assignments()
            .filter(eip=OuterRef("pk"))
            .filter(Q(node__name__icontains=q) | Q(node__instance_id__icontains=q))
        )
        qs = qs.filter(
            Q(public_ip__icontains=q)
            | Q(allocation_id__icontains=q)
            | Q(tags__icontains=q)
            | Q(instance_id__icontains=q)
            | Exists(node_match)
        )
    return qs.order_by(*eip_order(sort))


def unmanaged_list(*, q: str = "", sort: str = "ip") -> QuerySet[UnmanagedAddress]:
    """The region's EIPs that no pool selects, as the last pass saw them (the inventory's "unmanaged")."""
    qs = UnmanagedAddress.objects.all()
    q = q.strip()
    if q:
        qs = qs.filter(_contains_any(q, "public_ip", "allocation_id", "tags", "instance_id", "eni_id"))
    return qs.order_by(*eip_order(sort if sort in UNMANAGED_SORTS else "ip"))


def unmanaged_count() -> int:
    return UnmanagedAddress.objects.count()


@dataclass(frozen=True)
class PoolFirstRows:
    """A spec's pool as its page shows it: the first rows of eip_list(spec=...) with their columns, how many EIPs
    that list holds, and the public IPs of those AWS still lists in numeric order (pool_public_ips)."""

    rows: list[ElasticIP]
    total: int
    public_ips: list[str]


def pool_first_rows(*, spec: LaunchSpec, size: int) -> PoolFirstRows:
    """The pool read once (pool_filter: a JSON test of each of the region's EIPs, the most of each query's time) in
    eip_list's IP order, for its size, its first `size` keys and its public IPs; then the first rows with their
    columns (eip_annotated's subqueries) for those keys alone. The spec page read the pool three times: its first
    rows (the subqueries for every row), their count and the user data's IPs."""
    keys = list(pool_filter(ElasticIP.objects.all(), spec).order_by(*eip_order("ip"))
                .values_list("pk", "public_ip", "gone"))
    first = [pk for pk, _ip, _gone in keys[:size]]
    by_pk = {eip.pk: eip for eip in eip_annotated().filter(pk__in=first)}
    return PoolFirstRows(rows=[by_pk[pk] for pk in first if pk in by_pk], total=len(keys),
                         public_ips=[ip for _pk, ip, gone in keys if not gone])


def pool_public_ips(*, spec: LaunchSpec) -> list[str]:
    """The public IPs of the spec's pool that AWS still lists, in numeric order (the user-data snippet)."""
    qs = pool_filter(ElasticIP.objects.filter(gone=False), spec)
    return list(qs.order_by(dbfunctions.ip_order("public_ip", vendor=connection.vendor).asc())
                .values_list("public_ip", flat=True))


def eip_order(sort: str) -> list[str | OrderBy]:
    """EIP_SORTS with the public IP in numeric order on every database (SQLite stores it as text)."""
    ip_key = dbfunctions.ip_order("public_ip", vendor=connection.vendor)
    # The order of eip_state(): free, assigned, conflict, gone (has_open comes from eip_annotated()).
    state_rank = Case(When(gone=True, then=Value(3)), When(has_open=True, then=Value(1)),
                      When(~Q(association_id=""), then=Value(2)), default=Value(0), output_field=IntegerField())
    order: list[str | OrderBy] = []
    for term in EIP_SORTS.get(sort, EIP_SORTS["ip"]):
        if term.lstrip("-") == "public_ip":
            order.append(ip_key.desc() if term.startswith("-") else ip_key.asc())
        elif term.lstrip("-") == "state_rank":
            order.append(state_rank.desc() if term.startswith("-") else state_rank.asc())
        else:
            order.append(term)
    return order


def eip_get(*, allocation_id: str) -> ElasticIP | None:
    return eip_annotated().filter(allocation_id=allocation_id).first()


def launch_spec_for_eip(*, eip: ElasticIP, specs: Iterable[LaunchSpec] | None = None) -> list[LaunchSpec]:
    """The specs whose pool selector matches this EIP (more than one is a conflict)."""
    if specs is None:
        specs = LaunchSpec.objects.select_related("cluster").filter(cluster__region=eip.region)
    return specs_selecting(eip.tags, [s for s in specs if s.cluster.region == eip.region])


def eip_open_assignment(*, eip: ElasticIP) -> Assignment | None:
    # The node's cluster too: the EIP page links the node to its page (/nodes/<cluster>/<name>/).
    return _open_assignments().select_related("node__cluster", "launch_spec").filter(eip=eip).first()


def node_reassign_targets(*, spec: LaunchSpec, exclude_node_id: int | None = None) -> list[Node]:
    """Nodes of the spec that could take an EIP by hand, on the last snapshot, by the worker's own rules
    (workers/reassign.py `_check_target`): alive, not draining (cordoned, or tainted for removal by the
    cluster autoscaler or Karpenter), no EIP outside the pool, a primary private IPv4 to put it on, no pool
    EIP held or sitting on its ENI, matched by no other spec of the cluster. Never cached: the reassign dialog
    reads it when it opens and again after a refusal, when the worker's own reading has just been written."""
    holding = _open_assignments().filter(node=OuterRef("pk"))
    on_its_eni = ElasticIP.objects.filter(gone=False, eni_id=OuterRef("eni_id"))
    qs = (
        Node.objects.filter(
            launch_spec=spec,
            draining=False,
            drain_reason="",
            foreign_eip=False,
            deleted_at__isnull=True,
            instance_state__in=LIVE_STATES,
        )
        .exclude(state__in=[Node.State.GONE, Node.State.RELEASED, Node.State.DRAINING, Node.State.CONFLICT])
        .exclude(eni_id="")
        .exclude(private_ip="")
        .exclude(Exists(holding))
        .exclude(Exists(on_its_eni))
    )
    if exclude_node_id is not None:
        qs = qs.exclude(pk=exclude_node_id)
    rivals = [other for other in neighbour_specs(spec) if other.cluster_id == spec.cluster_id]
    return [node for node in qs.order_by("name")
            if not any(labels_match(other.labels, node.labels) for other in rivals)]


def reassign_request_get(*, allocation_id: str, request_id: int) -> ReassignRequest | None:
    """One manual reassign request of this EIP (a request id under another EIP's URL is not found)."""
    return ReassignRequest.objects.select_related("eip").filter(pk=request_id, eip__allocation_id=allocation_id).first()


# --- Nodes ---------------------------------------------------------------------------------------


# Nodes whose life with eipdash is over: hidden by default so that tables count what the tiles count.
ENDED_NODE_STATES = (Node.State.GONE, Node.State.RELEASED)


class _StateNotIn(Func):
    """NOT (state IN ('gone', ...)) with the values written into the SQL: the condition of the partial indexes
    node_live_name and node_active_name. SQLite uses a partial index only for a query that repeats its condition,
    and a bound parameter is not a value to it: with one, the nodes page sorted all 100,000 rows by name (30 ms)
    and counted them by a scan (10 ms). The values are Node.State's own, never the user's; the column is compiled
    as any other (the node table may go by another alias in a subquery)."""

    output_field = BooleanField()

    def __init__(self, states: Sequence[str]) -> None:
        assert states and all(state.isalpha() for state in states)
        super().__init__(F("state"))
        self.states = tuple(states)

    def as_sql(self, compiler: Any, connection: Any, function: str | None = None, template: str | None = None,
               arg_joiner: str | None = None, **extra_context: Any) -> tuple[str, Any]:
        column, params = compiler.compile(self.source_expressions[0])
        values = ", ".join(f"'{state}'" for state in self.states)
        condition = f"= {values}" if len(self.states) == 1 else f"IN ({values})"
        return f"NOT ({column} {condition})", params


_Row = TypeVar("_Row", bound=Model)


class PagedRows(Generic[_Row]):
    """A list page's rows for django.core.paginator.Paginator, in one query as before, but with every column the
    table shows computed for the page's rows only: the page's keys are chosen by a subquery of the list's filters
    and order alone (`WHERE id IN (SELECT id ... ORDER BY ... LIMIT 50 OFFSET n)`). Sliced whole, the databases
    computed the select list's correlated subqueries (an EIP's node, spec, ...) for every row before the OFFSET:
    the last page of 10,000 EIPs cost 550 ms on PostgreSQL, 50 ms on SQLite. The count selects no subquery
    either (Django leaves out the annotations it does not use)."""

    def __init__(self, rows: QuerySet[_Row]) -> None:
        self.rows = rows

    def count(self) -> int:
        return self.rows.count()

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[_Row]:
        return iter(self.rows)

    @overload
    def __getitem__(self, index: int) -> _Row: ...
    @overload
    def __getitem__(self, index: slice) -> list[_Row]: ...

    def __getitem__(self, index: int | slice) -> _Row | list[_Row]:
        if isinstance(index, int):
            return self[index:index + 1][0]
        return list(self.rows.filter(pk__in=self.rows.values("pk")[index]))


def node_list(
    *, q: str = "", spec: LaunchSpec | None = None, state: str = "", hide_ended: bool = False
) -> QuerySet[Node]:
    current = _open_assignments().filter(node=OuterRef("pk"))
    qs = Node.objects.select_related("launch_spec", "cluster").annotate(
        current_ip=Subquery(current.values("eip__public_ip")[:1]),
        current_allocation=Subquery(current.values("eip__allocation_id")[:1]),
    )
    if spec is not None:
        qs = qs.filter(launch_spec=spec)
    if state in NODE_STATES:
        qs = qs.filter(state=state)
    else:
        # Gone nodes are history: hidden unless asked for by state, or they would bury the live ones.
        qs = qs.filter(_StateNotIn(ENDED_NODE_STATES if hide_ended else (Node.State.GONE,)))
    q = q.strip()
    if q:
        qs = qs.filter(_contains_any(q, "name", "instance_id", "private_ip", "eip_label", "cluster__name")
                       | Q(Exists(current.filter(eip__public_ip__icontains=q))))
    return qs.order_by("name", "pk")


# --- History -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilters:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    spec: str = ""
    event: str = ""
    q: str = ""


def spec_name_known(name: str) -> bool:
    """A launch spec of that name exists, or existed (its events keep the name): the history filters."""
    return (LaunchSpec.objects.filter(name=name).exists()
            or Event.objects.filter(launch_spec=name).exists())  # the event_spec_time index


def event_list(*, filters: EventFilters) -> QuerySet[Event]:
    """The history filtered as the page, the exports and `export_history` all filter it.

    Newest first on (timestamp, id): the `event_time_desc` index serves the order, and the spec
    and kind indexes serve their filters.
    """
    qs = Event.objects.all()
    if filters.since is not None:
        qs = qs.filter(timestamp__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(timestamp__lt=filters.until)
    if filters.spec:
        qs = qs.filter(launch_spec=filters.spec)
    if filters.event:
        qs = qs.filter(kind=filters.event)
    q = filters.q.strip()
    if q:
        # On PostgreSQL, one LIKE on one expression, which the pg_trgm index of migration 0007 covers: a search
        # that matches a few rows of a million no longer scans the table. chr(31), the unit separator, keeps a
        # match from spanning two fields (unless the search holds that control character): the ORs' rows.
        qs = _text_in(qs, q, scan=False)
    return qs.order_by("-timestamp", "-id")


EVENT_SEARCH_FIELDS = ("node", "public_ip", "allocation_id", "instance_id", "actor", "reason")
# The history's search expression on PostgreSQL; migration 0007 indexes exactly this expression.
EVENT_SEARCH_SQL = (
    "UPPER(node || chr(31) || public_ip || chr(31) || allocation_id || chr(31) || instance_id || chr(31) || actor "
    "|| chr(31) || reason)"
)


def _like_escape(text: str) -> str:
    """A substring for LIKE: its own %, _ and backslash match literally (PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def encode_cursor(event: Event) -> str:
    return f"{event.timestamp.isoformat()}_{event.pk}"


def decode_cursor(raw: str) -> tuple[dt.datetime, int] | None:
    stamp, sep, pk = raw.rpartition("_")
    if not sep:
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp)
        number = int(pk)
    except ValueError:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, dt.UTC)
    return moment, number


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    next_cursor: str | None


def event_page(*, filters: EventFilters, before: str = "", size: int = 50) -> EventPage:
    """One page of history by keyset: rows strictly older than the cursor (timestamp, id).

    `timestamp <= t AND (timestamp < t OR id < n)` rather than a plain OR so that the database can
    still range-scan the timestamp index; OFFSET would read and discard every earlier row.
    """
    q = filters.q.strip()
    qs = event_list(filters=replace(filters, q="") if q else filters)
    cursor = decode_cursor(before) if before else None
    if cursor is not None:
        qs = _older_than(qs, *cursor)
    rows = _search_newest_first(qs, q, size + 1) if q else list(qs[: size + 1])
    next_cursor = encode_cursor(rows[size - 1]) if len(rows) > size else None
    return EventPage(events=rows[:size], next_cursor=next_cursor)


def _older_than(qs: QuerySet[Event], moment: dt.datetime, number: int) -> QuerySet[Event]:
    return qs.filter(timestamp__lte=moment).filter(Q(timestamp__lt=moment) | Q(id__lt=number))


# How many of the newest rows a history search reads on the time index before it asks the search index. A text
# that fewer than a page of these rows hold (under 0.5 %) goes to the index, which reads each of its matches: at a
# million rows, at most some 5,000 of them. Scanning the window costs about as much (some 12 ms on PostgreSQL).
SEARCH_WINDOW = 10_000


def _search_newest_first(qs: QuerySet[Event], q: str, limit: int) -> list[Event]:
    """The newest `limit` rows of `qs` (newest first) that hold the text `q`, in two bounded steps.

    A text that many rows hold (an operator's name) is found among the newest rows at once, walking the time
    index; a rare one (a node's name) is found by the pg_trgm index of migration 0007. Left to itself,
    PostgreSQL picks one of the two plans from its statistics' sample, and picked the trigram index (every
    match read, then sorted: 125-195 ms a page at a million rows) for a text that 3 % of the rows hold, where the
    walk takes 3-8 ms. So: first the newest SEARCH_WINDOW rows, scanned (an expression no index serves); then, if fewer
    than `limit` matched there, the rows older than that window, through the search index."""
    edge = list(qs.values_list("timestamp", "id")[SEARCH_WINDOW - 1 : SEARCH_WINDOW])
    if not edge:
        return list(_text_in(qs, q, scan=True)[:limit])
    moment, number = edge[0]
    newest = qs.filter(timestamp__gte=moment).filter(Q(timestamp__gt=moment) | Q(id__gte=number))
    found = list(_text_in(newest, q, scan=True)[:limit])
    if len(found) < limit:
        found += list(_text_in(_older_than(qs, moment, number), q, scan=False)[: limit - len(found)])
    return found


def _text_in(qs: QuerySet[Event], q: str, *, scan: bool) -> QuerySet[Event]:
    """`qs` narrowed to the rows that hold `q` in any searched field, as event_list searches. On PostgreSQL,
    `scan` asks with strpos, which no index serves (so the plan walks `qs`'s order); else with the LIKE
    that the trigram index serves."""
    if connection.vendor != "postgresql":
        return qs.filter(_contains_any(q, *EVENT_SEARCH_FIELDS))
    if scan:
        return qs.filter(RawSQL(f"strpos({EVENT_SEARCH_SQL}, UPPER(%s)) > 0", [q], output_field=BooleanField()))
    return qs.filter(RawSQL(f"{EVENT_SEARCH_SQL} LIKE UPPER(%s)", [f"%{_like_escape(q)}%"],
                            output_field=BooleanField()))


def event_count_newer(*, filters: EventFilters, after: str, limit: int = 1000) -> int:
    """How many events of the filter are newer than the cursor (capped: the page says "1000+")."""
    cursor = decode_cursor(after) if after else None
    if cursor is None:
        return 0
    moment, number = cursor
    qs = event_list(filters=filters).filter(timestamp__gte=moment).filter(Q(timestamp__gt=moment) | Q(id__gt=number))
    return qs.order_by()[:limit].count()


def event_counts_by_kind() -> dict[str, int]:
    """Events in the history by kind, from the counts the database keeps (pools.models.EventCount): a
    few rows, not a count over the whole history on every scrape and poll."""
    counts = {kind: 0 for kind in Event.Kind.values}
    counts.update(EventCount.objects.values_list("kind", "total"))
    return counts


def event_recent(*, spec_name: str | None = None, allocation_id: str | None = None, limit: int = 20) -> list[Event]:
    qs = Event.objects.all()
    if spec_name is not None:
        qs = qs.filter(launch_spec=spec_name)
    if allocation_id is not None:
        qs = qs.filter(allocation_id=allocation_id)
    return list(qs.order_by("-timestamp", "-id")[:limit])


@dataclass(frozen=True)
class PlanPreview:
    """The plan of the spec's latest pass, as it stored it (models.SpecPlan); no lines and no planned_at when no
    pass has planned the spec yet."""

    lines: list[str]
    error: str = ""
    # A disabled spec: every EIP it still holds, with what holds it back and what will release it (pools/drain.py).
    drain: list[DrainHold] = field(default_factory=list)
    # When that pass planned (its clock); None: no pass has planned the spec yet.
    planned_at: dt.datetime | None = None
    # The spec was edited (or disabled) after that pass read it: its next pass plans for the spec as it is now.
    outdated: bool = False

    @property
    def coming(self) -> list[DrainHold]:
        """The drain's releases after that pass (those of that pass are among its lines)."""
        return [hold for hold in self.drain if not hold.next_pass]

    @property
    def planned(self) -> bool:
        return self.planned_at is not None

    @property
    def age_seconds(self) -> float | None:
        """How old the plan is now (never below 0: the pass's clock may run a little ahead of this host's)."""
        if self.planned_at is None:
            return None
        return max(0.0, (timezone.now() - self.planned_at).total_seconds())

    @property
    def stale_after_seconds(self) -> int:
        """STALE_PASS_INTERVALS reconcile intervals, as for the spec's passes (stale_pass)."""
        return STALE_PASS_INTERVALS * max(1, settings.EIPDASH_RECONCILE_SECONDS)

    @property
    def stale(self) -> bool:
        """Older than stale_after_seconds: no pass has planned the spec since (a drained spec has no passes)."""
        age = self.age_seconds
        return age is not None and age > self.stale_after_seconds


_DRAIN_FIELDS = tuple(f.name for f in dataclass_fields(DrainHold))


def plan_preview(*, spec: LaunchSpec) -> PlanPreview:
    """The plan of the spec's latest pass, as that pass stored it (services.spec_plan_store), with its time,
    and for a disabled spec the drain EIP by EIP as that pass saw it. One query: the planner never runs on a
    request (it cost ~100 ms a poll at 5,000 EIPs).

    A stored plan that cannot be read (written by another version, or damaged) must not take the page down with
    it: the page is for on-call use.
    """
    return plan_previews([spec])[spec.pk]


def plan_previews(specs: Iterable[LaunchSpec]) -> dict[int, PlanPreview]:
    """plan_preview of each spec, by spec id, in one query."""
    specs = list(specs)
    rows = {spec_id: row for spec_id, *row in SpecPlan.objects.filter(spec_id__in=[spec.pk for spec in specs])
            .values_list("spec_id", "lines", "drain", "planned_at", "spec_updated_at")}
    return {spec.pk: _plan_preview_of(spec, rows.get(spec.pk)) for spec in specs}


def _plan_preview_of(spec: LaunchSpec, row: list[Any] | None) -> PlanPreview:
    if row is None:
        return PlanPreview(lines=[])
    lines, drain, planned_at, spec_updated_at = row
    try:
        holds = [DrainHold(**{name: hold[name] for name in _DRAIN_FIELDS if name in hold}) for hold in drain or []]
        return PlanPreview(lines=[str(line) for line in lines], drain=holds, planned_at=planned_at,
                           outdated=spec_updated_at != spec.updated_at)
    except (TypeError, KeyError, AttributeError) as exc:  # shown to the user and logged, never swallowed silently
        logger.exception("the stored plan of launch spec %s could not be read", spec.name)
        return PlanPreview(lines=[], error=f"The stored plan could not be read: {exc}", planned_at=planned_at)


def region_seq_current(*, region: str) -> int:
    """The region's sequence number now (0 before the first change): a reading taken from here on reflects
    every change whose closing bump came before (services.region_seq_bump)."""
    value = RegionSequence.objects.filter(region=region).values_list("value", flat=True).first()
    return int(value or 0)


def spec_fresh_from_seq(*, spec_id: int) -> int | None:
    """The region sequence number a shared reading must carry to serve the spec (SpecFence.fresh_from_seq);
    None before the spec's first pass ended: that pass takes a reading of its own."""
    value = SpecFence.objects.filter(spec_id=spec_id).values_list("fresh_from_seq", flat=True).first()
    return int(value) if value else None


def spec_ids_to_reconcile() -> list[int]:
    """The specs the beat sends a pass to: the enabled ones, and every disabled one with anything left, which
    drains (its passes release and close by the usual rules, and assign and taint nothing): an open claim, a
    pool EIP on one of its nodes, or a node of its waiting under the startup taint."""
    live_nodes = Node.objects.filter(deleted_at__isnull=True, launch_spec__isnull=False)
    held_enis = ElasticIP.objects.filter(gone=False).exclude(eni_id="").values("eni_id")
    left = (Q(pk__in=Assignment.objects.filter(closed_at__isnull=True).values("launch_spec"))
            | Q(pk__in=live_nodes.filter(startup_tainted=True).values("launch_spec"))
            | Q(pk__in=live_nodes.filter(eni_id__in=held_enis).values("launch_spec")))
    return list(LaunchSpec.objects.filter(Q(enabled=True) | left).order_by("pk").values_list("pk", flat=True))


# --- One node: its page and the API's waitingReason (pools/node_reason.py decides, from these facts) ----

# The node page's timeline reads at most this many of the node's history events (the newest).
NODE_EVENTS_SHOWN = 200


def node_get(*, cluster: str, name: str) -> Node | None:
    """The node of that name in that cluster (one row: unique per cluster and name)."""
    return (Node.objects.select_related("cluster", "launch_spec__cluster")
            .filter(cluster__name=cluster, name=name).first())


def _mentioning(qs: QuerySet[Event], text: str) -> QuerySet[Event]:
    """On PostgreSQL, the history search's own condition (the pg_trgm index of migration 0007): a node name is a
    selective search, so the exact filters that follow read a few rows, not the history since a date. Elsewhere
    the exact filters alone."""
    return _text_in(qs, text, scan=False) if connection.vendor == "postgresql" else qs


def event_list_where(*, filters: EventFilters, node: str = "", cluster: str = "") -> QuerySet[Event]:
    """event_list, narrowed to the events of one node (its exact name) and/or one cluster (the API's events)."""
    qs = event_list(filters=filters)
    if node:
        qs = _mentioning(qs, node).filter(node=node)
    if cluster:
        qs = qs.filter(cluster=cluster)
    return qs


def node_events(*, cluster: str, name: str, since: dt.datetime | None = None, spec: str = "",
                limit: int = NODE_EVENTS_SHOWN) -> list[Event]:
    """The node's history, oldest first: the events that name it, and its spec's pool_exhausted events that list
    it among their waiting nodes (the newest `limit`). `since`: its first sighting, so that a name reused by
    another instance (EKS ip-… names) does not inherit the last one's history."""
    mine = Q(node=name, cluster=cluster)
    if spec:
        mine |= Q(node="", kind=Event.Kind.POOL_EXHAUSTED, launch_spec=spec, cluster=cluster)
    rows = list(_mentioning(event_list(filters=EventFilters(since=since)), name).filter(mine)[:limit])
    rows.reverse()
    return [event for event in rows if event.node or name in node_reason.waiting_names(event.reason)]


def _last_releases(nodes: Sequence[Node]) -> dict[int, node_reason.LastRelease]:
    """Each node's last confirmed assignment that closed since it was first seen: its last release. One query,
    a correlated subquery per node by the assignments' node index."""
    last = (Assignment.objects.filter(node=OuterRef("pk"), closed_at__isnull=False, confirmed_at__isnull=False,
                                      closed_at__gte=OuterRef("first_seen_at")).order_by("-closed_at", "-pk"))
    rows = (Node.objects.filter(pk__in=[n.pk for n in nodes]).order_by()
            .annotate(at=Subquery(last.values("closed_at")[:1]), ip=Subquery(last.values("eip__public_ip")[:1]),
                      why=Subquery(last.values("close_reason")[:1]))
            .filter(at__isnull=False).values_list("pk", "at", "ip", "why"))
    return {pk: node_reason.LastRelease(at=at, public_ip=ip or "", reason=why or "") for pk, at, ip, why in rows}


def _pool_facts(row: PoolStats) -> node_reason.PoolFacts:
    spec = row.spec
    return node_reason.PoolFacts(spec=spec.name, enabled=spec.enabled, size=row.pool_size, free=row.free,
                                 selector=spec.selector_text(), alerts=frozenset(spec.active_alerts or []))


def _unclaimed_view(node: Node) -> NodeView:
    """A node no spec claims, as the planner would see it under none (no spec's labels to match)."""
    row = {column: getattr(node, column) for column in NODE_COLUMNS}
    return replace(node_view(row, LaunchSpec(labels={}), []), matches_spec=False)


def node_facts_and_stats(nodes: Sequence[Node]) -> tuple[dict[int, node_reason.NodeFacts], dict[int, PoolStats]]:
    """The facts node_reason judges, for a page of nodes (their cluster and launch_spec loaded), and their specs'
    pool counts: a fixed number of queries per launch spec among them (its counts, its stored plan, its
    neighbours), none per node."""
    facts, stats, _plans = _node_facts(nodes)
    return facts, stats


def _node_facts(nodes: Sequence[Node]) -> tuple[dict[int, node_reason.NodeFacts], dict[int, PoolStats],
                                                 dict[int, PlanPreview]]:
    """node_facts_and_stats, and the stored plan of each of their specs (plan_previews). What the plan does with
    a node is read from the plan its spec's latest pass stored (node_reason.next_pass_of_lines), as the spec page
    shows it: no request runs the planner (it cost 20-40 ms a request at 500 nodes a spec)."""
    if not nodes:
        return {}, {}, {}
    specs = {node.launch_spec_id: node.launch_spec for node in nodes if node.launch_spec is not None}
    stats = {row.spec.pk: row for row in pool_stats_list(specs=list(specs.values()))} if specs else {}
    rivals = {pk: [s for s in neighbour_specs(spec) if s.cluster_id == spec.cluster_id] for pk, spec in specs.items()}
    plans = plan_previews(specs.values())
    held = {a.node_id: a for a in _open_assignments().filter(node_id__in=[n.pk for n in nodes]).select_related("eip")}
    releases = _last_releases(nodes)
    facts = {}
    for node in nodes:
        spec = specs.get(node.launch_spec_id) if node.launch_spec_id else None
        release = releases.get(node.pk)
        facts[node.pk] = node_reason.NodeFacts(
            view=_node_view_of(node, spec, rivals), cluster=node.cluster.name, state=node.state,
            first_seen_at=node.first_seen_at, deleted_at=node.deleted_at, eip_ready_at=node.eip_ready_at,
            pool=_pool_facts(stats[spec.pk]) if spec is not None else None,
            holding=_holding(held.get(node.pk)),
            next_pass=_stored_next_pass(plans[spec.pk] if spec is not None else None, node.name),
            waiting_since=max(node.first_seen_at, release.at) if release is not None else node.first_seen_at,
            last_release=release,
        )
    return facts, stats, plans


def _node_view_of(node: Node, spec: LaunchSpec | None, rivals: dict[int | None, list[LaunchSpec]]) -> NodeView:
    if spec is None:
        return _unclaimed_view(node)
    return node_view({column: getattr(node, column) for column in NODE_COLUMNS}, spec, rivals[spec.pk])


def _holding(claim: Assignment | None) -> node_reason.Holding | None:
    if claim is None:
        return None
    return node_reason.Holding(public_ip=claim.eip.public_ip, allocation_id=claim.eip.allocation_id,
                               since=claim.opened_at, confirmed=claim.confirmed_at is not None)


def _stored_next_pass(plan: PlanPreview | None, name: str) -> node_reason.NextPass | None:
    """What the stored plan does with the node; None without a stored plan, or with one that cannot be read (the
    reason then goes by the pool's counts alone)."""
    if plan is None or not plan.planned or plan.error:
        return None
    return node_reason.next_pass_of_lines(plan.lines, name)


def node_reasons(nodes: Sequence[Node], *, now: dt.datetime | None = None) -> dict[int, node_reason.NodeReason]:
    """Why each node is where it is (the API's waitingReason), by node id."""
    now = now or timezone.now()
    facts, _stats = node_facts_and_stats(nodes)
    return {pk: node_reason.node_reason(one, now) for pk, one in facts.items()}


@dataclass(frozen=True)
class NodePage:
    """What the node page shows. `node` None: its row is gone (retention), only its history names it."""

    cluster: str
    name: str
    node: Node | None
    facts: node_reason.NodeFacts | None
    events: list[Event]  # oldest first
    stats: PoolStats | None
    kube_context: str
    kubeconfig: str = ""
    # The plan its spec's latest pass stored (what facts.next_pass was read from); None without a spec.
    plan: PlanPreview | None = None


def node_page(*, cluster: str, name: str) -> NodePage | None:
    """One node's page, from its row and its history; None when the record knows neither."""
    node = node_get(cluster=cluster, name=name)
    if node is None:
        events = node_events(cluster=cluster, name=name)
        if not events:
            return None
        row = Cluster.objects.filter(name=cluster).values_list("kube_context", "kubeconfig").first()
        return NodePage(cluster=cluster, name=name, node=None, facts=None, events=events, stats=None,
                        kube_context=row[0] if row else "", kubeconfig=row[1] if row else "")
    facts, stats, plans = _node_facts([node])
    spec = node.launch_spec
    events = node_events(cluster=cluster, name=name, since=node.first_seen_at, spec=spec.name if spec else "")
    return NodePage(cluster=cluster, name=name, node=node, facts=facts[node.pk], events=events,
                    stats=stats.get(spec.pk) if spec is not None else None, kube_context=node.cluster.kube_context,
                    kubeconfig=node.cluster.kubeconfig, plan=plans.get(spec.pk) if spec is not None else None)
