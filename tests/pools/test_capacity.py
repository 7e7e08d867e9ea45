"""pools/capacity.py: demand intervals, peaks (and the profile that answers them for the pages), the pool's size back
in time, idle hours (and from a coverage), egress counts."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from pools.capacity import (
    HOURS_PER_MONTH,
    NodeDemand,
    Peak,
    counts_at,
    coverage,
    demand_end,
    demand_profile,
    egress_counts,
    from_micros,
    idle_hours,
    idle_hours_covered,
    is_byoip,
    merged,
    merged_length,
    micros,
    money,
    peak,
    pool_sizes_at,
    sample_times,
    shortfall,
)

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def spans(*pairs: tuple[float, float]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(at(a), at(b)) for a, b in pairs]


def test_peak_of_a_history_with_a_known_answer() -> None:
    # Three nodes overlap from hour 5 to hour 6; never four.
    history = spans((0, 10), (2, 6), (5, 8), (7, 9), (9, 12))
    assert peak(history, at(0), at(24)) == Peak(3, at(5))


def test_peak_counts_an_end_before_a_start_at_the_same_moment() -> None:
    # A replacement node that starts the moment the old one stops is not two nodes at once.
    assert peak(spans((0, 4), (4, 8)), at(0), at(24)) == Peak(1, at(0))


def test_peak_clips_to_the_window() -> None:
    history = spans((0, 10), (1, 10), (2, 3), (11, 20))
    # From hour 4 on, the two long ones still count (at the window's start); the short one is over.
    assert peak(history, at(4), at(24)) == Peak(2, at(4))
    # A window after every interval, or one an interval only touches: nothing.
    assert peak(history, at(20), at(24)) == Peak(0, None)
    assert peak([], at(0), at(1)) == Peak(0, None)
    # An empty interval (seen and gone at once) never counts.
    assert peak(spans((3, 3)), at(0), at(24)) == Peak(0, None)


def node(**facts: object) -> NodeDemand:
    values: dict[str, object] = {"first_seen_at": at(0), "last_seen_at": at(9), "deleted_at": None, "of_spec": True,
                                 "ended": False, "holding": False, "last_closed": None, "last_close_kind": ""}
    values.update(facts)
    return NodeDemand(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("facts", "end"), [
    # Listed and of the spec, waiting or holding: still demanding.
    ({}, 100),
    ({"holding": True, "last_closed": at(3), "last_close_kind": "released"}, 100),
    # Released and still listed (drained): its demand ended at the release.
    ({"ended": True, "last_closed": at(4), "last_close_kind": "released"}, 4),
    # Deleted, its EIP taken back afterwards: it held it until then.
    ({"ended": True, "deleted_at": at(5), "last_closed": at(6), "last_close_kind": "released"}, 6),
    # Deleted while waiting again after a failed claim: until the deletion.
    ({"ended": True, "deleted_at": at(7), "last_closed": at(2), "last_close_kind": "interrupted"}, 7),
    # Deleted without ever getting an EIP.
    ({"ended": True, "deleted_at": at(8)}, 8),
    # Gone without a deletion time: when it was last seen.
    ({"ended": True}, 9),
    # Moved to another spec: tied to this one only until its assignment of this spec closed.
    ({"of_spec": False, "last_closed": at(3), "last_close_kind": "moved"}, 3),
    ({"of_spec": False, "holding": True}, 100),
])  # fmt: skip
def test_demand_end(facts: dict[str, object], end: float) -> None:
    assert demand_end(node(**facts), at(100)) == at(end)


def test_counts_at_and_sample_times() -> None:
    times = sample_times(at(0), at(10), 6)
    assert times == [at(0), at(2), at(4), at(6), at(8), at(10)]
    assert counts_at(spans((0, 4), (4, 8), (1, 20)), times) == [1, 2, 2, 2, 1, 1]
    assert sample_times(at(0), at(10), 1) == [at(10)]


def test_pool_sizes_are_worked_back_from_now() -> None:
    # 12 now; +1 at hour 5, -1 at hour 7, +2 at hour 9: 10 before hour 5, 11 from 5, 10 from 7, 12 from 9.
    changes = [(at(5), 1), (at(7), -1), (at(9), 1), (at(9), 1)]
    assert pool_sizes_at(12, changes, [at(0), at(5), at(6), at(7), at(8), at(9), at(10)]) == [10, 11, 11, 10, 10,
                                                                                              12, 12]
    # Never below zero, whatever the record says.
    assert pool_sizes_at(0, [(at(5), 3)], [at(0)]) == [0]


def test_idle_hours_subtract_the_held_times_once() -> None:
    # 24 hours available; held 2..6 and 4..8 (overlapping: 6 hours), and 20..30 (4 inside).
    held = spans((2, 6), (4, 8), (20, 30))
    assert merged_length(spans((2, 6), (4, 8))) == dt.timedelta(hours=6)
    assert idle_hours(since=at(0), now=at(24), held=held) == pytest.approx(14)
    # Held before its time in the window counts for nothing; a window that has not begun is 0.
    assert idle_hours(since=at(10), now=at(24), held=spans((0, 9))) == pytest.approx(14)
    assert idle_hours(since=at(24), now=at(24), held=[]) == 0


def test_byoip_money_and_shortfall() -> None:
    assert not is_byoip("amazon") and not is_byoip("")
    assert is_byoip("ipv4pool-ec2-0123456789abcdef0")
    assert HOURS_PER_MONTH == 730 and money(0.005 * 3 * 730) == 10.95
    assert shortfall(14, 12) == 2 and shortfall(3, 12) == 0 and shortfall(0, 0) == 0


def test_egress_counts_leave_unknown_subnets_in_nodes_only() -> None:
    by_subnet = {
        "subnet-pub": {"via": "internet-gateway", "target": "igw-1", "address": ""},
        "subnet-nat": {"via": "nat", "target": "nat-1", "address": "1.2.3.4"},
        "subnet-iso": {"via": "none", "target": "", "address": ""},
    }
    counts = egress_counts({"subnet-pub": 3, "subnet-nat": 2, "subnet-iso": 1, "subnet-new": 4, "": 1}, by_subnet)
    assert (counts.nodes, counts.via_igw, counts.via_nat, counts.no_route) == (11, 3, 2, 1)


def test_a_profile_answers_as_peak_and_counts_at_on_the_same_spans() -> None:
    # Spans of every kind: overlapping, touching (an end at another's start), empty, ongoing (end None), one that
    # ends after now (a clock ahead), and windows before, across and after them.
    rng = random.Random(7)
    for _ in range(400):
        spans = []
        for _span in range(rng.randrange(0, 10)):
            first = rng.randrange(0, 40)
            spans.append((at(first), None if rng.random() < 0.3 else at(first + rng.randrange(-2, 15))))
        now, start = at(rng.randrange(0, 50)), at(rng.randrange(-5, 50))
        ending_now = [(first, now if last is None else last) for first, last in spans]
        profile = demand_profile(spans)
        assert profile.peak(start, now) == peak(ending_now, start, now)
        times = [at(rng.randrange(-5, 55)) for _time in range(6)]
        assert profile.counts_at(times, now) == counts_at(ending_now, times)


def test_a_profile_peak_is_the_first_moment_of_the_highest_count() -> None:
    profile = demand_profile([(at(0), at(10)), (at(2), at(6)), (at(5), None), (at(12), None), (at(13), None)])
    assert profile.peak(at(0), at(24)) == Peak(3, at(5))  # 3 again from hour 13: the first time wins
    assert profile.peak(at(7), at(24)) == Peak(3, at(13))
    assert profile.peak(at(5), at(5)) == Peak(0, None)
    # An ongoing span is open until now and not at now: the last sample of a chart ending now leaves it out.
    assert profile.counts_at([at(12), at(13), at(24)], at(24)) == [2, 3, 0]
    assert demand_profile([], since=at(3)).covers(at(3)) and not demand_profile([], since=at(3)).covers(at(2))


def test_idle_hours_from_a_coverage_are_idle_hours() -> None:
    rng = random.Random(11)
    for _ in range(300):
        held = {key: [(at(a), at(a + rng.randrange(-1, 10))) for a in (rng.randrange(0, 40) for _i in range(4))]
                for key in (1, 2)}
        covered = coverage({key: [(micros(a), micros(b)) for a, b in spans] for key, spans in held.items()})
        now, since = at(rng.randrange(0, 50)), at(rng.randrange(-5, 50))
        for key in (1, 2, 3):
            also = [(at(rng.randrange(0, 45)), now)] if rng.random() < 0.5 else []
            assert idle_hours_covered(since=since, now=now, held=covered, key=key, also=also) == idle_hours(
                since=since, now=now, held=held.get(key, []) + also)
    assert merged([(1, 3), (2, 5), (7, 7), (5, 6)]) == [(1, 6)]
    assert from_micros(micros(at(1.5))) == at(1.5)
