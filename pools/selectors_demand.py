"""The demand of a launch spec's nodes for EIPs over the last 30 days, read from the record and kept in Django's
cache: the profile (pools/capacity.py DemandProfile) behind the capacity figures' peaks and the spec page's chart
(pools/selectors_capacity.py says what they mean; pools/capacity.py demand_until says how long a node demands).

The nodes: Node rows of the spec that may overlap the window (listed, or deleted since its start) with their
assignments of the spec, and the nodes tied to it by the window's assignments of its pool (moved to another spec,
deleted before the window and their EIP taken back inside it).

A cluster keeps 100,000s of deleted nodes and closed assignments, and the spec page, its API and /metrics ask for
the same 30 days of them every few seconds: reading and converting those rows was most of their time. So the rows
are split by what can change them, each part kept under a stamp of its rows (never a time-only expiry that could
show stale figures):

- The settled history (_History, in Django's cache): the spec's nodes deleted since the history's start, its
  assignments closed since then (each node's last close, the time they held each EIP), and the earlier last close
  of those deleted nodes. Its stamp: how many of the spec's nodes were deleted since the history's start and the
  last deletion, how many of its assignments are closed and the last close (counts over index ranges, from the
  indexes alone). Rows join it as they happen, each stamped with that time: when a last one moved, the rows after
  it are read and merged in. A row that leaves it (the retention; a deleted node's row back under a reused name)
  or a close that committed late shows as a count the merge does not reach: the history is read whole.
- What a pass rewrites is summed up on every request, in the same query as that stamp: the spec's live nodes (how
  many, the sum of their ids, the last first sighting; the same of those that ended), its open assignments (how
  many, the highest id). A node that comes, goes, ends or is first seen anew, a claim made or closed, moves one.
- The demand profile (pools/capacity.py DemandProfile) is kept under both. It is swept anew, from the cached
  history and the live rows (a few hundred), when either moved or when the facts of the few nodes tied to the pool
  that are neither (moved to another spec, deleted before the history's start: read on every request) changed. A
  request that finds it valid sweeps nothing: the peaks of any window that ends now are a lookup.
- /metrics (peak_list) checks cheaper signals on each scrape: the last deletion and the last close of each spec
  (one index probe each) instead of counting 30 days of rows, and the live part; the whole stamp again
  TRUST_SECONDS after it was last checked. The pages, the API and the command check the whole stamp every time.

The history starts at midnight UTC before the 30-day window (history_start), so one entry serves a whole day, and
the next day's is the same one less what fell out of it (a node whose demand ended before a window's start counts at
none of its moments). The demand of several specs takes the same fixed number of queries as one.
"""

from __future__ import annotations

import datetime as dt
import time
from array import array
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from operator import or_
from typing import Any, NamedTuple, TypeVar, cast

from django.core.cache import cache
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    DateTimeField,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from .capacity import (
    Coverage,
    DemandProfile,
    NodeDemand,
    coverage,
    demand_profile_micros,
    demand_until,
    from_micros,
    micros,
)
from .models import Assignment, LaunchSpec, Node
from .selectors import ENDED_NODE_STATES

__all__ = ["MONTH", "Demand", "demand_list", "demand_profiles", "history_start"]

# The longest window the history serves: the 30-day peak.
MONTH = dt.timedelta(days=30)
# An entry is replaced as soon as its stamp changes; this expiry only frees what nobody asks for any more.
CACHE_SECONDS = 2 * 24 * 3600
# /metrics trusts a cached profile whose signals (_signals) have not moved for this long after it last checked its
# whole stamp: a row that only leaves the history (the retention, a deleted node's name reused) shows in its
# gauges within that time; every other change at the next scrape. The pages check the whole stamp every time.
TRUST_SECONDS = 600

K = TypeVar("K")


# --- the stamps -----------------------------------------------------------------------------------------


def history_start(now: dt.datetime) -> dt.datetime:
    """Where the cached history starts: midnight UTC before the 30-day window that ends now."""
    return (now - MONTH).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class _Stamp(NamedTuple):
    """What one spec's demand depends on, besides the few tied nodes (see the module's docstring).

    history: its nodes deleted since `since` and the last deletion; its closed assignments and the last close.
    live: its live nodes, the sum of their ids and their last first sighting; the same of those that ended (released
    or gone, still listed), with their last sighting; its open assignments and the highest of their ids. A node
    that comes, goes, comes back under another name (first seen anew) or ends changes a count, a sum or a last one.
    """

    since: dt.datetime
    history: tuple[Any, ...]
    live: tuple[Any, ...]


def _stamps(specs: Sequence[LaunchSpec], since: dt.datetime) -> dict[int, _Stamp]:
    """The stamps of these specs: one query, five grouped counts over index ranges (the history's from the
    (launch_spec, deleted_at) and (launch_spec, closed_at) indexes alone), whatever the number of specs."""
    zero = Value(0, output_field=BigIntegerField())
    return _stamps_of(specs, since, [
        _grouped(Node.objects.filter(launch_spec__in=specs, deleted_at__gte=since), 0, zero, Max("deleted_at")),
        _grouped(Assignment.objects.filter(launch_spec__in=specs, closed_at__isnull=False), 1, zero,
                 Max("closed_at")),
        *_live_parts(specs),
    ])


def _live_parts(specs: Sequence[LaunchSpec]) -> list[QuerySet[Any]]:
    """The live part of the stamps: the live nodes (count, sum of ids, last first sighting); those that ended
    (count, sum of ids, and the last sighting of those without a close of the spec: the only ones it can end);
    the open assignments (count, highest id). By the (launch_spec, deleted_at), (launch_spec, state) and
    (launch_spec, closed_at) indexes."""
    live = Node.objects.filter(launch_spec__in=specs, deleted_at__isnull=True)
    closed = Assignment.objects.filter(node=OuterRef("pk"), launch_spec=OuterRef("launch_spec"),
                                       closed_at__isnull=False)
    seen_if_unclosed = Case(When(~Exists(closed), then=F("last_seen_at")), default=None,
                            output_field=DateTimeField())
    return [
        _grouped(live, 2, Sum("id"), Max("first_seen_at")),
        _grouped(live.filter(state__in=ENDED_NODE_STATES), 3, Sum("id"), Max(seen_if_unclosed)),
        _grouped(Assignment.objects.filter(launch_spec__in=specs, closed_at__isnull=True), 4, Max("id"),
                 Value(None, output_field=DateTimeField())),
    ]


def _grouped(rows: QuerySet[Any], part: int, number: Any, moment: Any) -> QuerySet[Any]:
    """(spec id, part, count, number, moment) per spec of these rows."""
    return (rows.order_by().values_list("launch_spec_id")
            .annotate(part=Value(part, output_field=IntegerField()), n=Count("*"), number=number, moment=moment))


def _stamps_of(specs: Sequence[LaunchSpec], since: dt.datetime, parts: list[QuerySet[Any]]) -> dict[int, _Stamp]:
    """The stamps from these five parts in one UNION query: (count, number, moment) per spec and part; the
    history's parts give (count, last deletion) and (count, last close), or their last ones alone (_signals)."""
    found: dict[tuple[int, int], tuple[Any, ...]] = {}
    for spec_id, part, n, number, moment in parts[0].union(*parts[1:], all=True):
        found[spec_id, part] = (n, number, moment)
    stamps = {}
    for spec in specs:
        deleted, closed, live, ended, opened = (found.get((spec.pk, part), (0, 0, None)) for part in range(5))
        stamps[spec.pk] = _Stamp(since, history=(deleted[0], deleted[2], closed[0], closed[2]),
                                 live=(*live, *ended, *opened[:2]))
    return stamps


# --- the settled history -------------------------------------------------------------------------------


def _ids(values: Iterable[int] = ()) -> array[int]:
    return array("q", values)


def _has(ids: array[int], node_id: int) -> bool:
    """Whether the sorted ids hold this one."""
    i = bisect_left(ids, node_id)
    return i < len(ids) and ids[i] == node_id


# A node's last close: when (micros) and its kind.
Close = tuple[int, str]


@dataclass(frozen=True)
class _History:
    """One spec's settled history since `since`, as of its stamp; ids sorted, moments in micros (pools/capacity.py
    micros): arrays, which cost next to nothing to read back from the cache.

    deleted_*: its nodes deleted since then, when each was first seen and deleted, and when its demand ended unless
    it still holds an EIP. closed_*: the nodes with an assignment of the spec closed since then, their last such
    close and its kind (an index into kinds). held: per EIP id, the time those assignments held it. others: the
    closed_ids that are not deleted_ids (live nodes of the spec, or tied to it).
    """

    since: dt.datetime
    stamp: tuple[Any, ...] = ()
    deleted_ids: array[int] = field(default_factory=_ids)
    deleted_first: array[int] = field(default_factory=_ids)
    deleted_at: array[int] = field(default_factory=_ids)
    deleted_until: array[int] = field(default_factory=_ids)
    closed_ids: array[int] = field(default_factory=_ids)
    closed_at: array[int] = field(default_factory=_ids)
    closed_kind: array[int] = field(default_factory=_ids)
    kinds: tuple[str, ...] = ()
    held: Coverage = field(default_factory=Coverage)
    others: array[int] = field(default_factory=_ids)

    def last_close(self, node_id: int) -> tuple[dt.datetime | None, str]:
        """The node's last close of the spec since `since` (None, "" without one)."""
        i = bisect_left(self.closed_ids, node_id)
        if i < len(self.closed_ids) and self.closed_ids[i] == node_id:
            return from_micros(self.closed_at[i]), self.kinds[self.closed_kind[i]]
        return None, ""

    def closes(self) -> dict[int, Close]:
        return {node_id: (at, self.kinds[kind])
                for node_id, at, kind in zip(self.closed_ids, self.closed_at, self.closed_kind, strict=True)}

    def deleted(self) -> dict[int, tuple[int, int, int]]:
        return {node_id: (first, deleted_at, until) for node_id, first, deleted_at, until in zip(
            self.deleted_ids, self.deleted_first, self.deleted_at, self.deleted_until, strict=True)}

    def advanced(self, since: dt.datetime) -> _History:
        """This history from a later start: what a read from there would hold (the nodes deleted since then, the
        last closes since then; the time held before it counts in no window from there). A deleted node's end
        does not depend on where the history starts, so nothing is read: the day's new start costs no read."""
        begin = micros(since)
        deleted = {node_id: row for node_id, row in self.deleted().items() if row[1] >= begin}
        closes = {node_id: close for node_id, close in self.closes().items() if close[0] >= begin}
        last = max((row[1] for row in deleted.values()), default=None)
        _n, _last, closed_n, last_closed = self.stamp
        stamp = (len(deleted), None if last is None else from_micros(last), closed_n, last_closed)
        # The time held before the new start counts in no window from there: kept, it would only grow.
        held = {key: kept for key, parts in self.held.parts().items()
                if (kept := [(start, end) for start, end in parts if end >= begin])}
        return _history_of(since, stamp, deleted, closes, held)


def _history_of(since: dt.datetime, stamp: tuple[Any, ...], deleted: dict[int, tuple[int, int, int]],
                closes: dict[int, Close], held: dict[int, list[tuple[int, int]]]) -> _History:
    """A _History from its parts: deleted nodes (first seen, deleted, end), last closes, held times per EIP."""
    kinds = tuple(sorted({kind for _at, kind in closes.values()}))
    deleted_ids = _ids(sorted(deleted))
    closed_ids = _ids(sorted(closes))
    return _History(
        since=since, stamp=stamp, deleted_ids=deleted_ids,
        deleted_first=_ids(deleted[node_id][0] for node_id in deleted_ids),
        deleted_at=_ids(deleted[node_id][1] for node_id in deleted_ids),
        deleted_until=_ids(deleted[node_id][2] for node_id in deleted_ids),
        closed_ids=closed_ids,
        closed_at=_ids(closes[node_id][0] for node_id in closed_ids),
        closed_kind=_ids(kinds.index(closes[node_id][1]) for node_id in closed_ids),
        kinds=kinds, held=coverage(held),
        others=_ids(node_id for node_id in closed_ids if node_id not in deleted),
    )  # fmt: skip


def _settled_end(first: dt.datetime, deleted_at: dt.datetime, close: tuple[dt.datetime | None, str]) -> dt.datetime:
    """When a deleted node of the spec stopped demanding, unless it still holds an EIP (demand_until)."""
    closed_at, kind = close
    # A deleted node has ended; its last sighting never ends its demand (it has a deletion time).
    until = demand_until(NodeDemand(first_seen_at=first, last_seen_at=deleted_at, deleted_at=deleted_at,
                                    of_spec=True, ended=True, holding=False, last_closed=closed_at,
                                    last_close_kind=kind))
    assert until is not None  # a node that has ended and holds nothing
    return until


def _keep_last(closes: dict[K, tuple[Any, str]], key: K, closed_at: Any, kind: str) -> None:
    """Keep the later close of a node (by time, then kind: the order the pure rules' max gives)."""
    if key not in closes or (closed_at, kind) > closes[key]:
        closes[key] = (closed_at, kind)


def _close_rows(closed: QuerySet[Assignment]) -> Iterable[tuple[int, int, dt.datetime, str]]:
    """(spec id, node id, closed at, kind) of these closed assignments."""
    return cast(Iterable[tuple[int, int, dt.datetime, str]],
                closed.order_by().values_list("launch_spec_id", "node_id", "closed_at", "close_kind"))


def _closed_since(rows: QuerySet[Assignment]) -> Iterable[tuple[int, int, int, dt.datetime, dt.datetime, str]]:
    """(spec id, node id, EIP id, held since, closed at, kind) of these closed assignments."""
    return cast(Iterable[tuple[int, int, int, dt.datetime, dt.datetime, str]], rows.order_by().values_list(
        "launch_spec_id", "node_id", "eip_id", Coalesce("confirmed_at", "opened_at"), "closed_at", "close_kind"))


def _deleted_rows(rows: QuerySet[Node]) -> Iterable[tuple[int, int, dt.datetime, dt.datetime]]:
    """(spec id, node id, first seen, deleted at) of these deleted nodes."""
    return cast(Iterable[tuple[int, int, dt.datetime, dt.datetime]],
                rows.order_by().values_list("launch_spec_id", "id", "first_seen_at", "deleted_at"))


def _read_history(specs: Sequence[LaunchSpec], since: dt.datetime,
                  stamps: dict[int, _Stamp]) -> dict[int, _History]:
    """The settled histories of these specs since `since`, read whole: three queries by index."""
    last: dict[tuple[int, int], tuple[dt.datetime, str]] = {}
    held: dict[int, dict[int, list[tuple[int, int]]]] = {spec.pk: defaultdict(list) for spec in specs}
    for spec_id, node_id, eip_id, held_from, closed_at, kind in _closed_since(
            Assignment.objects.filter(launch_spec__in=specs, closed_at__gte=since)):
        _keep_last(last, (spec_id, node_id), closed_at, kind)
        held[spec_id][eip_id].append((micros(held_from), micros(closed_at)))
    # The last close before `since` of the spec's nodes deleted since then, for those with none after (a node
    # released long ago and deleted lately ended with its release).
    earlier: dict[tuple[int, int], tuple[dt.datetime, str]] = {}
    for spec_id, node_id, before, kind in _close_rows(Assignment.objects.filter(
            launch_spec__in=specs, closed_at__lt=since, node__launch_spec=F("launch_spec"),
            node__deleted_at__gte=since)):
        _keep_last(earlier, (spec_id, node_id), before, kind)
    deleted: dict[int, dict[int, tuple[int, int, int]]] = {spec.pk: {} for spec in specs}
    for spec_id, node_id, first, deleted_at in _deleted_rows(
            Node.objects.filter(launch_spec__in=specs, deleted_at__gte=since)):
        close = last.get((spec_id, node_id)) or earlier.get((spec_id, node_id)) or (None, "")
        deleted[spec_id][node_id] = (micros(first), micros(deleted_at),
                                     micros(_settled_end(first, deleted_at, close)))
    closes: dict[int, dict[int, Close]] = {spec.pk: {} for spec in specs}
    for (spec_id, node_id), (closed_at, kind) in last.items():
        closes[spec_id][node_id] = (micros(closed_at), kind)
    return {spec.pk: _history_of(since, stamps[spec.pk].history if stamps else (), deleted[spec.pk],
                                 closes[spec.pk], held[spec.pk]) for spec in specs}


def _refresh_history(old: dict[int, _History], stamps: dict[int, _Stamp]) -> dict[int, _History]:
    """The histories that only gained rows since they were read (new deletions and closes, each stamped with the
    time it happened, so after the last one read), brought up to date by reading those rows alone: two queries,
    and one for the earlier closes of newly deleted nodes without a close since `since`, if any. A history whose
    counts say more happened (a row the retention deleted, a deleted node back, a close that committed late) is
    left out: the caller reads it whole."""
    newly_deleted, newly_closed = [], []
    for spec_id, history in old.items():
        _deleted_n, last_deleted, _closed_n, last_closed = history.stamp
        newly_deleted.append(Q(launch_spec_id=spec_id, deleted_at__gt=last_deleted) if last_deleted
                             else Q(launch_spec_id=spec_id, deleted_at__gte=history.since))
        newly_closed.append(Q(launch_spec_id=spec_id, closed_at__gt=last_closed) if last_closed
                            else Q(launch_spec_id=spec_id, closed_at__isnull=False))
    deleted_rows: dict[int, list[tuple[int, dt.datetime, dt.datetime]]] = defaultdict(list)
    for spec_id, node_id, first, deleted_at in _deleted_rows(Node.objects.filter(reduce(or_, newly_deleted))):
        deleted_rows[spec_id].append((node_id, first, deleted_at))
    closed_rows: dict[int, list[tuple[int, int, dt.datetime, dt.datetime, str]]] = defaultdict(list)
    for spec_id, node_id, eip_id, held_from, closed_at, kind in _closed_since(
            Assignment.objects.filter(reduce(or_, newly_closed))):
        closed_rows[spec_id].append((node_id, eip_id, held_from, closed_at, kind))
    fresh: dict[int, _History] = {}
    lacking: dict[int, list[int]] = {}
    for spec_id, history in old.items():
        deleted_n, _last_deleted, closed_n, _last_closed = history.stamp
        stamp = stamps[spec_id].history
        if (deleted_n + len(deleted_rows[spec_id]) != stamp[0] or closed_n + len(closed_rows[spec_id]) != stamp[2]
                or any(closed_at < history.since for _node, _eip, _held, closed_at, _kind in closed_rows[spec_id])):
            continue
        fresh[spec_id] = history
        closing = {node_id for node_id, _eip, _held, _closed, _kind in closed_rows[spec_id]}
        lacking[spec_id] = [node_id for node_id, _first, _deleted in deleted_rows[spec_id]
                            if node_id not in closing and not _has(history.closed_ids, node_id)]
    earlier = _earlier_closes(lacking)
    return {spec_id: _updated(spec_id, history, stamps[spec_id].history, deleted_rows[spec_id],
                              closed_rows[spec_id], earlier) for spec_id, history in fresh.items()}


def _earlier_closes(lacking: dict[int, list[int]]) -> dict[tuple[int, int], tuple[dt.datetime, str]]:
    """The last close of these newly deleted nodes, none of them since the history's start, per (spec id, node
    id): one query when there are any."""
    found: dict[tuple[int, int], tuple[dt.datetime, str]] = {}
    wanted = [Q(launch_spec_id=spec_id, node_id__in=nodes) for spec_id, nodes in lacking.items() if nodes]
    if wanted:
        for spec_id, node_id, closed_at, kind in _close_rows(
                Assignment.objects.filter(reduce(or_, wanted), closed_at__isnull=False)):
            _keep_last(found, (spec_id, node_id), closed_at, kind)
    return found


def _updated(spec_id: int, history: _History, stamp: tuple[Any, ...],
             deleted_rows: list[tuple[int, dt.datetime, dt.datetime]],
             closed_rows: list[tuple[int, int, dt.datetime, dt.datetime, str]],
             earlier: dict[tuple[int, int], tuple[dt.datetime, str]]) -> _History:
    """The history with these new deletions and closes: the deleted nodes they concern get their end anew."""
    closes = history.closes()
    held = history.held.parts()
    changed: set[int] = set()
    for node_id, eip_id, held_from, closed_at, kind in closed_rows:
        _keep_last(closes, node_id, micros(closed_at), kind)
        held.setdefault(eip_id, []).append((micros(held_from), micros(closed_at)))
        changed.add(node_id)
    deleted = history.deleted()
    for node_id, first, deleted_at in deleted_rows:
        deleted[node_id] = (micros(first), micros(deleted_at), 0)
        changed.add(node_id)
    for node_id in changed & deleted.keys():
        first_seen, deleted_when, _until = deleted[node_id]
        close: tuple[dt.datetime | None, str] = earlier.get((spec_id, node_id), (None, ""))
        if node_id in closes:
            close = (from_micros(closes[node_id][0]), closes[node_id][1])
        until = _settled_end(from_micros(first_seen), from_micros(deleted_when), close)
        deleted[node_id] = (first_seen, deleted_when, micros(until))
    return _history_of(history.since, stamp, deleted, closes, held)


def _history_list(specs: Sequence[LaunchSpec], stamps: dict[int, _Stamp]) -> dict[int, _History]:
    """The specs' settled histories: from the cache where the stamp still holds, brought up to date where rows
    were only added, read whole otherwise (a fixed number of queries in each case)."""
    keys = {spec.pk: f"capacity-history:{spec.pk}" for spec in specs}
    found = cache.get_many(keys.values())
    histories: dict[int, _History] = {}
    behind: dict[int, _History] = {}
    for spec in specs:
        entry: _History | None = found.get(keys[spec.pk])
        stamp = stamps[spec.pk]
        if entry is None or entry.since > stamp.since:
            continue
        if entry.since < stamp.since:
            entry = entry.advanced(stamp.since)  # a new day
        if entry.stamp == stamp.history:
            histories[spec.pk] = entry
        else:
            behind[spec.pk] = entry
    fresh = _refresh_history(behind, stamps) if behind else {}
    unread = [spec for spec in specs if spec.pk not in histories and spec.pk not in fresh]
    if unread:
        fresh.update(_read_history(unread, stamps[unread[0].pk].since, stamps))
    # Those advanced to a new day and found to hold are stored too.
    fresh.update({pk: history for pk, history in histories.items() if found[keys[pk]].since != history.since})
    if fresh:
        cache.set_many({keys[pk]: history for pk, history in fresh.items()}, timeout=CACHE_SECONDS)
    return {**histories, **fresh}


# --- what a pass rewrites, and the profile --------------------------------------------------------------


# The facts of a tied node: id, spec id, first seen, last seen, deleted at, state.
TiedFacts = tuple[int, int | None, dt.datetime, dt.datetime, dt.datetime | None, str]


@dataclass
class _Live:
    """One spec's rows that a pass rewrites, read when its profile must be swept anew.

    nodes: its live nodes (id, first seen, last seen for those that ended, else None: a live node of the spec that
    has not ended demands until now, whatever its last sighting). holders: the nodes of its open assignments.
    ended_closes: the last close of the spec of each ended live node that holds nothing. tied_ids: the nodes tied
    to its pool by its assignments that are neither its live nodes nor in its settled history's deleted ones
    (moved to another spec, deleted before the history's start), whose facts are read on every request.
    """

    nodes: list[tuple[int, dt.datetime, dt.datetime | None]] = field(default_factory=list)
    holders: set[int] = field(default_factory=set)
    ended_closes: dict[int, tuple[dt.datetime, str]] = field(default_factory=dict)
    tied_ids: list[int] = field(default_factory=list)


def _read_live(specs: Sequence[LaunchSpec], histories: dict[int, _History]) -> dict[int, _Live]:
    """The live rows of these specs: two queries by index, and one for the few ended live nodes if any."""
    live: dict[int, _Live] = {spec.pk: _Live() for spec in specs}
    ended = Case(When(state__in=ENDED_NODE_STATES, then=F("last_seen_at")), default=None, output_field=DateTimeField())
    nodes = (Node.objects.filter(launch_spec__in=specs, deleted_at__isnull=True).order_by()
             .annotate(ended_seen=ended).values_list("launch_spec_id", "id", "first_seen_at", "ended_seen"))
    for spec_id, node_id, first, ended_seen in nodes:
        live[spec_id].nodes.append((node_id, first, ended_seen))
    for spec_id, node_id in (Assignment.objects.filter(launch_spec__in=specs, closed_at__isnull=True).order_by()
                             .values_list("launch_spec_id", "node_id")):
        live[spec_id].holders.add(node_id)
    wanted: dict[int, set[int]] = {}
    for spec in specs:
        rows, history = live[spec.pk], histories[spec.pk]
        own = {node_id for node_id, _first, _seen in rows.nodes}
        wanted[spec.pk] = {node_id for node_id, _first, seen in rows.nodes
                           if seen is not None and node_id not in rows.holders}
        rows.tied_ids = sorted(node_id for node_id in {*history.others, *rows.holders}
                               if node_id not in own and not _has(history.deleted_ids, node_id))
    nodes_wanted = set().union(*wanted.values())
    if nodes_wanted:
        for spec_id, node_id, closed_at, kind in _close_rows(Assignment.objects.filter(
                launch_spec__in=specs, node_id__in=nodes_wanted, closed_at__isnull=False)):
            if node_id in wanted.get(spec_id, ()):
                _keep_last(live[spec_id].ended_closes, node_id, closed_at, kind)
    return live


def _tied_facts(node_ids: set[int]) -> dict[int, TiedFacts]:
    """The facts of these tied nodes (a handful): one query when there are any."""
    if not node_ids:
        return {}
    rows = Node.objects.filter(pk__in=node_ids).order_by().values_list(
        "id", "launch_spec_id", "first_seen_at", "last_seen_at", "deleted_at", "state")
    return {row[0]: cast(TiedFacts, row) for row in rows}


def _spans(spec_id: int, history: _History, live: _Live, tied: Iterable[TiedFacts]) -> list[tuple[int, int | None]]:
    """One (first seen, end or None while it still demands) span per node, in micros: the live nodes as read now,
    the settled history's deleted nodes (one that holds an EIP still demands), and the tied nodes."""
    spans: list[tuple[int, int | None]] = []
    own = set()
    for node_id, first, ended_seen in live.nodes:
        own.add(node_id)
        closed_at, kind = live.ended_closes.get(node_id, (None, ""))
        spans.append(_span(NodeDemand(
            first_seen_at=first, last_seen_at=ended_seen or first, deleted_at=None, of_spec=True,
            ended=ended_seen is not None, holding=node_id in live.holders, last_closed=closed_at,
            last_close_kind=kind)))
    for node_id, since, until in zip(history.deleted_ids, history.deleted_first, history.deleted_until, strict=True):
        if node_id not in own:  # else its row came back (a reused name): as it is now
            spans.append((since, None if node_id in live.holders else until))
    for node_id, node_spec, first, last_seen, deleted_at, state in tied:
        closed_at, kind = history.last_close(node_id)
        spans.append(_span(NodeDemand(
            first_seen_at=first, last_seen_at=last_seen, deleted_at=deleted_at, of_spec=node_spec == spec_id,
            ended=deleted_at is not None or state in ENDED_NODE_STATES, holding=node_id in live.holders,
            last_closed=closed_at, last_close_kind=kind)))
    return spans


def _span(node: NodeDemand) -> tuple[int, int | None]:
    until = demand_until(node)
    return micros(node.first_seen_at), None if until is None else micros(until)


@dataclass(frozen=True)
class _Profile:
    """A cached profile: the stamp it was swept at (or last found to hold), when that was (time.time()), the tied
    nodes and their facts then, and the profile."""

    key: _Stamp
    checked_at: float
    tied_ids: tuple[int, ...]
    tied: tuple[TiedFacts, ...]
    profile: DemandProfile


@dataclass(frozen=True)
class Demand:
    """Per spec id: its demand profile, and (when asked for) the time its assignments closed since the history's
    start held each EIP (the idle cost: pools/selectors_capacity.py)."""

    profiles: dict[int, DemandProfile]
    held: dict[int, Coverage]


def _signals(specs: Sequence[LaunchSpec], since: dt.datetime) -> dict[int, tuple[Any, ...]]:
    """Per spec id, the part of its stamp that moves on every change but a row leaving the history: the last
    deletion and the last close (one index probe each, from the end of the spec's range) and the live part, in one
    query (_signal_of the same spec's _Stamp when nothing changed)."""
    last_deleted = (Node.objects.filter(launch_spec=OuterRef("pk"), deleted_at__gte=since).order_by("-deleted_at")
                    .values("deleted_at")[:1])
    last_closed = (Assignment.objects.filter(launch_spec=OuterRef("pk"), closed_at__isnull=False)
                   .order_by("-closed_at").values("closed_at")[:1])
    zero = Value(0, output_field=BigIntegerField())
    lasts = [LaunchSpec.objects.filter(pk__in=[spec.pk for spec in specs]).order_by()
             .annotate(part=Value(part, output_field=IntegerField()), n=zero, number=zero,
                       moment=Subquery(last, output_field=DateTimeField()))
             .values_list("pk", "part", "n", "number", "moment")
             for part, last in ((0, last_deleted), (1, last_closed))]
    return {pk: _signal_of(stamp) for pk, stamp in _stamps_of(specs, since, [*lasts, *_live_parts(specs)]).items()}


def _signal_of(stamp: _Stamp) -> tuple[Any, ...]:
    return (stamp.since, stamp.history[1], stamp.history[3], stamp.live)


def _entries(specs: Sequence[LaunchSpec], since: dt.datetime, *, exact: bool) -> tuple[
        dict[int, _Stamp], dict[int, _Profile], dict[int, _Profile], dict[int, float]]:
    """The specs' stamps, their cached profiles that still hold, those of them to store again with the time of
    this check, and when the whole stamp of each one trusted on its signals was last checked. exact: by the whole
    stamp. Else by its signals alone (_signals: what every change but a row leaving the history moves) for a
    profile checked less than TRUST_SECONDS ago, and by the whole stamp for the others."""
    keys = {spec.pk: f"capacity-demand:{spec.pk}" for spec in specs}
    found = cache.get_many(keys.values())
    cached: dict[int, _Profile] = {pk: entry for pk, key in keys.items() if (entry := found.get(key)) is not None}
    trusted: dict[int, _Profile] = {}
    if not exact:
        signals = _signals(specs, since)
        recent = time.time() - TRUST_SECONDS
        trusted = {pk: entry for pk, entry in cached.items()
                   if entry.checked_at > recent and _signal_of(entry.key) == signals[pk]}
    rest = [spec for spec in specs if spec.pk not in trusted]
    stamps = {pk: entry.key for pk, entry in trusted.items()} | (_stamps(rest, since) if rest else {})
    held = {spec.pk: cached[spec.pk] for spec in rest if spec.pk in cached and cached[spec.pk].key == stamps[spec.pk]}
    # Those checked a while ago are stored again with the time of this check, so that /metrics may trust them.
    stale = time.time() - TRUST_SECONDS / 2
    rechecked = {pk: entry for pk, entry in held.items() if entry.checked_at < stale}
    return stamps, {**trusted, **held}, rechecked, {pk: entry.checked_at for pk, entry in trusted.items()}


def demand_list(specs: Sequence[LaunchSpec], *, now: dt.datetime, exact: bool = True, held: bool = False) -> Demand:
    """The demand of these specs for every window of the last 30 days (and shorter) that ends now: each profile
    from the cache while its stamp (see _entries for `exact`) and its tied nodes are as they were, else swept anew
    from its settled history and its live rows. A fixed number of queries whatever the number of specs. held: the
    time each pool EIP was held too."""
    since = history_start(now)
    stamps, entries, rechecked, trusted_at = _entries(specs, since, exact=exact)
    tied = _tied_facts({node_id for entry in entries.values() for node_id in entry.tied_ids})
    profiles = {pk: entry.profile for pk, entry in entries.items()
                if tuple(tied[n] for n in entry.tied_ids if n in tied) == entry.tied}
    unswept = [spec for spec in specs if spec.pk not in profiles]
    wanted = specs if held else unswept
    histories = _history_list(wanted, stamps) if wanted else {}
    checked = time.time()
    store = {pk: replace(entry, checked_at=checked) for pk, entry in rechecked.items() if pk in profiles}
    if unswept:
        swept = _sweep(unswept, histories, tied, since=since)
        for pk, (profile, tied_ids, facts) in swept.items():
            profiles[pk] = profile
            # A stamp taken on trust keeps the time its whole stamp was last checked: swept again (its tied nodes
            # moved), it must not be trusted for another TRUST_SECONDS, or a row leaving the history never shows.
            store[pk] = _Profile(key=stamps[pk], checked_at=trusted_at.get(pk, checked), tied_ids=tied_ids,
                                 tied=facts, profile=profile)
    if store:
        cache.set_many({f"capacity-demand:{pk}": entry for pk, entry in store.items()}, timeout=CACHE_SECONDS)
    return Demand(profiles=profiles, held={pk: history.held for pk, history in histories.items()} if held else {})


def _sweep(specs: Sequence[LaunchSpec], histories: dict[int, _History], tied: dict[int, Any], *,
           since: dt.datetime) -> dict[int, tuple[DemandProfile, tuple[int, ...], tuple[Any, ...]]]:
    """Per spec id: its profile swept anew from its settled history and its live rows, with its tied nodes' ids and
    facts (`tied` gains the facts of those it did not hold yet)."""
    live = _read_live(specs, histories)
    tied.update(_tied_facts({n for rows in live.values() for n in rows.tied_ids} - tied.keys()))
    swept = {}
    for spec in specs:
        rows = live[spec.pk]
        facts = tuple(tied[n] for n in rows.tied_ids if n in tied)
        profile = demand_profile_micros(_spans(spec.pk, histories[spec.pk], rows, facts), since=since)
        swept[spec.pk] = (profile, tuple(rows.tied_ids), facts)
    return swept


def _demand_uncached(specs: Sequence[LaunchSpec], *, since: dt.datetime) -> dict[int, DemandProfile]:
    """The profiles for windows that start before the cached history: read whole, kept nowhere."""
    histories = _read_history(specs, since, {})
    live = _read_live(specs, histories)
    tied = _tied_facts({node_id for rows in live.values() for node_id in rows.tied_ids})
    return {spec.pk: demand_profile_micros(_spans(spec.pk, histories[spec.pk], live[spec.pk],
                                                  (tied[n] for n in live[spec.pk].tied_ids if n in tied)),
                                           since=since) for spec in specs}


def demand_profiles(specs: Sequence[LaunchSpec], *, now: dt.datetime | None = None,
                    start: dt.datetime | None = None) -> dict[int, DemandProfile]:
    """Per spec id, the demand of its nodes for every window from `start` (default: the 30 days before now) to now:
    from the cache when `start` is within the cached history, else read for that window alone."""
    now = now or timezone.now()
    since = history_start(now)
    if start is not None and start < since:
        return _demand_uncached(specs, since=start)
    return demand_list(specs, now=now).profiles
