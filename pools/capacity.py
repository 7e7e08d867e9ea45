"""How big a launch spec's pool must be, what it costs, and where its nodes' traffic leaves. Pure: no Django, no I/O.

pools/selectors_capacity.py reads the rows and hands plain values to the rules here, so that each rule has one
home and can be tested on its own.

Demand. A node demands an EIP from its first sighting (it waits, then holds) until it stops needing one: one
interval per node (demand_end says when it ends). A node released, then back in use (a drain called off) counts as
demanding throughout: the interval is the node's whole life in the spec, never several.

Peaks. The highest number of intervals open at one moment in a window, and the first moment it was reached
(peak). An interval is half-open, [start, end): at a moment where one node stops and another starts, the one that
stopped no longer counts (ends come before starts), so a replacement does not look like two nodes at once.
DemandProfile answers the same questions (peak, counts_at) from the intervals swept once, for any window that ends
now: the pages ask them every few seconds of the same thousands of intervals.

Cost. AWS bills every public IPv4 address by the hour, attached or not: the price is EIPDASH_IPV4_HOURLY_USD per
address-hour. Addresses brought to AWS (BYOIP: a PublicIpv4Pool other than "amazon") cost nothing and are
counted apart. A month is 730 hours (365 days × 24 / 12, AWS's own convention). The idle cost is what the pool's
billable addresses cost over the last 30 days while no node held them (idle_hours).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from .egress import VIA_IGW, VIA_NAT, VIA_NONE, egress_of
from .vocabulary import CloseKind

# Hours in an average month (365 × 24 / 12): how AWS turns an hourly price into a monthly one.
HOURS_PER_MONTH = 730
# The PublicIpv4Pool of Amazon's own addresses ("" where the reading did not say: taken as Amazon's, billed).
AMAZON_POOLS = frozenset({"", "amazon"})
HOUR = timedelta(hours=1)

Interval = tuple[datetime, datetime]
# A node's demand: from its first sighting until an end, None while it still demands (demand_until).
Span = tuple[datetime, datetime | None]


@dataclass(frozen=True)
class Peak:
    """The most nodes that demanded an EIP at the same moment in a window, and the first moment it happened
    (None when no node demanded one)."""

    count: int
    at: datetime | None


NO_PEAK = Peak(0, None)


@dataclass(frozen=True)
class NodeDemand:
    """One node's facts as far as one spec's demand goes.

    of_spec: the node is the spec's (Node.launch_spec); False for a node tied to it only by assignments of its
    pool (a node since moved to another spec). ended: Kubernetes no longer lists it (deleted_at) or the pass
    marked it released or gone. holding: an open assignment of this spec. last_closed / last_close_kind: its
    assignment of this spec closed last, and why.
    """

    first_seen_at: datetime
    last_seen_at: datetime
    deleted_at: datetime | None
    of_spec: bool
    ended: bool
    holding: bool
    last_closed: datetime | None
    last_close_kind: str = ""


def demand_until(node: NodeDemand) -> datetime | None:
    """When the node stopped demanding an EIP of the spec (None while it still does).

    - It holds one of the pool's EIPs, or it is a live node of the spec (waiting or holding): None.
    - A node tied to the spec only by its assignments: when the last of them closed.
    - Its last assignment closed as a release: then (a released node still listed, drained or cordoned, is not
      waiting for another).
    - Otherwise the later of its deletion and its last close (a node deleted before its EIP was taken back held
      it until then); a row with neither ends when it was last seen.
    """
    if node.holding or (node.of_spec and not node.ended):
        return None
    if node.last_closed is not None and (not node.of_spec or node.last_close_kind == CloseKind.RELEASED):
        return node.last_closed
    ends = [t for t in (node.deleted_at, node.last_closed) if t is not None]
    return max(ends) if ends else node.last_seen_at


def demand_end(node: NodeDemand, now: datetime) -> datetime:
    """demand_until, `now` while the node still demands."""
    until = demand_until(node)
    return now if until is None else until


def clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[Interval]:
    """The intervals' parts inside [start, end]; empty parts (and empty intervals) dropped."""
    clipped = []
    for first, last in intervals:
        first, last = max(first, start), min(last, end)
        if first < last:
            clipped.append((first, last))
    return clipped


def peak(intervals: Iterable[Interval], start: datetime, end: datetime) -> Peak:
    """The most intervals open at one moment of [start, end] and the first moment it happened: a sweep over
    their starts and ends in time order, an end before a start at the same moment."""
    # (time, 0) for an end sorts before (time, 1) for a start of the same moment.
    steps = sorted(step for first, last in clip(intervals, start, end) for step in ((first, 1), (last, 0)))
    best, at, open_now = 0, None, 0
    for moment, is_start in steps:
        open_now += 1 if is_start else -1
        if open_now > best:
            best, at = open_now, moment
    return Peak(best, at)


def counts_at(intervals: Iterable[Interval], times: Sequence[datetime]) -> list[int]:
    """How many intervals are open at each of these moments (an interval is open at its start, not at its end)."""
    pairs = list(intervals)
    starts = sorted(first for first, last in pairs if first < last)
    ends = sorted(last for first, last in pairs if first < last)
    return [bisect_right(starts, t) - bisect_right(ends, t) for t in times]


def sample_times(start: datetime, end: datetime, points: int) -> list[datetime]:
    """`points` moments from start to end, both included, evenly spaced (one point: the end)."""
    if points <= 1:
        return [end]
    step = (end - start) / (points - 1)
    return [start + step * i for i in range(points - 1)] + [end]


def pool_sizes_at(current: int, changes: Iterable[tuple[datetime, int]], times: Sequence[datetime]) -> list[int]:
    """The pool's size at each moment, worked backwards from its size now through the changes since (+1 an EIP
    that joined, -1 one that left, at their times): a change at t is part of the pool from t on."""
    ordered = sorted(changes)
    moments = [t for t, _delta in ordered]
    # after[i]: the net change of ordered[i:], i.e. of every change at or after moments[i].
    after = [0] * (len(ordered) + 1)
    for i in range(len(ordered) - 1, -1, -1):
        after[i] = after[i + 1] + ordered[i][1]
    return [max(0, current - after[bisect_right(moments, t)]) for t in times]


# Moments as whole microseconds since the epoch (UTC): exact, and an array of them is a few bytes to keep in a
# cache and read back, where a list of datetimes costs a microsecond each to unpickle on every request.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def _array(values: Iterable[int] = ()) -> array[int]:
    return array("q", values)


@dataclass(frozen=True)
class DemandProfile:
    """The nodes demanding at each moment, from spans swept once: peak() and counts_at() give what the functions
    of the same names give on the same spans, each ongoing one (end None) ending at the `now` they are given.

    A span still demanding is counted as never ending: for every moment before `now` that is the same count, so
    the profile does not depend on `now` and serves every request until the rows change. times: the moments where
    the count changes, in order; counts: the count from each of them on (ends before starts at the same moment);
    best_from / best_at: the highest count from times[i] on, and the first index where it is reached (a window
    that ends now reads its peak at once); ongoing: the starts of the ongoing spans, in order. All in micros.
    since: the spans are those of the nodes that may overlap a window starting then or later (None: any window).
    """

    times: array[int] = field(default_factory=_array)
    counts: array[int] = field(default_factory=_array)
    best_from: array[int] = field(default_factory=_array)
    best_at: array[int] = field(default_factory=_array)
    ongoing: array[int] = field(default_factory=_array)
    since: datetime | None = None

    def covers(self, start: datetime) -> bool:
        return self.since is None or start >= self.since

    def _count(self, moment: int) -> int:
        i = bisect_right(self.times, moment) - 1
        return self.counts[i] if i >= 0 else 0

    def peak(self, start: datetime, now: datetime) -> Peak:
        """peak(spans, start, now), the ongoing spans ending at now."""
        if start >= now:
            return NO_PEAK
        begin, end = micros(start), micros(now)
        at_start = self._count(begin)
        first, stop = bisect_right(self.times, begin), bisect_left(self.times, end)
        best, best_index = 0, -1
        if first < stop == len(self.times):
            best, best_index = self.best_from[first], self.best_at[first]
        else:
            # A moment at or after now (a clock ahead of this one): read the part before now.
            for i in range(first, stop):
                if self.counts[i] > best:
                    best, best_index = self.counts[i], i
        if max(at_start, best) == 0:
            return NO_PEAK
        if at_start >= best:
            return Peak(at_start, start)  # every span open at the start starts there once clipped
        return Peak(best, from_micros(self.times[best_index]))

    def counts_at(self, times: Sequence[datetime], now: datetime) -> list[int]:
        """counts_at(spans, times), the ongoing spans ending at now (so not open at now or after)."""
        end = micros(now)
        counts = []
        for t in times:
            moment = micros(t)
            counts.append(self._count(moment) - (bisect_right(self.ongoing, moment) if moment >= end else 0))
        return counts


def demand_profile(spans: Iterable[Span], *, since: datetime | None = None) -> DemandProfile:
    """The profile of these spans (first seen, end or None while ongoing)."""
    return demand_profile_micros(((micros(first), None if last is None else micros(last)) for first, last in spans),
                                 since=since)


def demand_profile_micros(spans: Iterable[tuple[int, int | None]], *, since: datetime | None = None) -> DemandProfile:
    """demand_profile of spans in micros. A span that ends as it starts counts never."""
    steps: list[tuple[int, int]] = []
    ongoing: list[int] = []
    for first, last in spans:
        if last is None:
            ongoing.append(first)
            steps.append((first, 1))
        elif first < last:
            steps.extend(((first, 1), (last, 0)))
    # (time, 0) for an end sorts before (time, 1) for a start of the same moment, as in peak().
    steps.sort()
    times, counts = _array(), _array()
    now_open = 0
    for moment, is_start in steps:
        now_open += 1 if is_start else -1
        if times and times[-1] == moment:
            counts[-1] = now_open
        else:
            times.append(moment)
            counts.append(now_open)
    best_from, best_at = _array(counts), _array(range(len(counts)))
    for i in range(len(counts) - 2, -1, -1):
        # Strictly higher later on: on a tie the earlier moment is the first time the peak was reached.
        if best_from[i + 1] > counts[i]:
            best_from[i], best_at[i] = best_from[i + 1], best_at[i + 1]
    ongoing.sort()
    return DemandProfile(times=times, counts=counts, best_from=best_from, best_at=best_at, ongoing=_array(ongoing),
                         since=since)


def shortfall(peak_count: int, pool: int) -> int:
    """How many EIPs the pool lacked for the peak: never below 0 (0 when no node demanded any)."""
    return max(0, peak_count - pool)


# --- cost -----------------------------------------------------------------------------------------------------


def is_byoip(public_ipv4_pool: str) -> bool:
    """An address of a pool brought to AWS (BYOIP): not billed by the hour."""
    return public_ipv4_pool not in AMAZON_POOLS


def hours(span: timedelta) -> float:
    return span / HOUR


def merged_length(intervals: Iterable[Interval]) -> timedelta:
    """The time covered by these intervals, overlaps counted once."""
    total = timedelta(0)
    reach: datetime | None = None
    for first, last in sorted(intervals):
        if reach is not None and first < reach:
            first = reach
        if first < last:
            total += last - first
            reach = last if reach is None else max(reach, last)
    return total


def idle_hours(*, since: datetime, now: datetime, held: Iterable[Interval]) -> float:
    """Hours one EIP spent free between `since` (the later of the window's start, its first sighting in the pool
    and the spec's creation) and now: that span less the times a node held it, never below 0."""
    if since >= now:
        return 0.0
    busy = merged_length(clip(held, since, now))
    return max(0.0, hours(now - since - busy))


def merged(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """These intervals (in micros) merged: disjoint, in order; empty ones dropped."""
    parts: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if first >= last:
            continue
        if parts and first <= parts[-1][1]:
            parts[-1] = (parts[-1][0], max(parts[-1][1], last))
        else:
            parts.append((first, last))
    return parts


@dataclass(frozen=True)
class Coverage:
    """Intervals per key (an EIP), merged once, in micros, with their running total: the time they cover inside any
    window in two binary searches (idle_hours over thousands of closed assignments, asked every few seconds). Every
    key's intervals in flat arrays, which cost next to nothing to keep in a cache and read back.

    keys: in order; the intervals of keys[k] are starts/ends[offsets[k]:offsets[k + 1]]; totals[i]: the length of
    the intervals before i, all keys together.
    """

    keys: array[int] = field(default_factory=_array)
    offsets: array[int] = field(default_factory=lambda: _array([0]))
    starts: array[int] = field(default_factory=_array)
    ends: array[int] = field(default_factory=_array)
    totals: array[int] = field(default_factory=lambda: _array([0]))

    def within(self, key: int, start: int, end: int) -> int:
        """The micros the key's intervals cover inside [start, end]."""
        k = bisect_left(self.keys, key)
        if start >= end or k == len(self.keys) or self.keys[k] != key:
            return 0
        low, high = self.offsets[k], self.offsets[k + 1]
        return self._up_to(end, low, high) - self._up_to(start, low, high)

    def _up_to(self, moment: int, low: int, high: int) -> int:
        i = bisect_right(self.starts, moment, low, high)
        if i == low:
            return 0
        return self.totals[i] - self.totals[low] - max(0, self.ends[i - 1] - moment)

    def parts(self) -> dict[int, list[tuple[int, int]]]:
        """The merged intervals of each key (to add some and build the coverage anew)."""
        return {key: list(zip(self.starts[self.offsets[k]:self.offsets[k + 1]],
                              self.ends[self.offsets[k]:self.offsets[k + 1]], strict=True))
                for k, key in enumerate(self.keys)}


def coverage(intervals: Mapping[int, Iterable[tuple[int, int]]]) -> Coverage:
    """The coverage of these intervals (in micros) per key; empty ones cover nothing."""
    keys, offsets, starts, ends = _array(), _array([0]), _array(), _array()
    for key in sorted(intervals):
        for first, last in merged(intervals[key]):
            starts.append(first)
            ends.append(last)
        keys.append(key)
        offsets.append(len(starts))
    lengths = (last - first for first, last in zip(starts, ends, strict=True))
    return Coverage(keys=keys, offsets=offsets, starts=starts, ends=ends,
                    totals=_array(accumulate(lengths, initial=0)))


def idle_hours_covered(*, since: datetime, now: datetime, held: Coverage, key: int,
                       also: Iterable[Interval] = ()) -> float:
    """idle_hours with the held times as the key's part of a Coverage, plus a few more intervals (the open
    assignments)."""
    if since >= now:
        return 0.0
    begin, end = micros(since), micros(now)
    busy = held.within(key, begin, end)
    # Each part of the extra intervals adds what the coverage does not already count.
    for first, last in merged((max(begin, micros(first)), min(end, micros(last))) for first, last in also):
        busy += (last - first) - held.within(key, first, last)
    return max(0.0, hours(now - since - busy * MICROSECOND))


def money(amount: float, places: int = 2) -> float:
    """US dollars as the API shows them: 2 decimals (an hourly price: 4, or one address's $0.005 shows as a cent)."""
    return round(amount, places)


# --- egress ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EgressCounts:
    """The spec's live nodes, and where their traffic to the internet leaves (unknown subnets: only in nodes)."""

    nodes: int = 0
    via_igw: int = 0
    via_nat: int = 0
    no_route: int = 0


def egress_counts(subnets: Mapping[str, int], by_subnet: Mapping[str, Mapping[str, str]]) -> EgressCounts:
    """subnets: how many live nodes per subnet id; by_subnet: the region's egress map (RegionFacts.egress)."""
    via: Counter[str] = Counter()
    for subnet_id, n in subnets.items():
        via[egress_of(by_subnet, subnet_id).via] += n
    return EgressCounts(nodes=sum(subnets.values()), via_igw=via[VIA_IGW], via_nat=via[VIA_NAT],
                        no_route=via[VIA_NONE])
