"""The overview's cached pool-use spans never show a stale pool: every write shows on the next request."""

from __future__ import annotations

import datetime as dt

from django.core.cache import cache
from django.utils import timezone

from pools import selectors, services
from pools.models import Assignment, Node
from tests.fixtures.web import WebWorld, make_node


def _in_use_now(now: dt.datetime) -> int:
    (series,) = selectors.pool_use_series(stats=selectors.pool_stats_list(), now=now, hours=24, step_minutes=60)
    return series.points[-1][1]


def test_cached_use_series_reflects_each_write_at_once(web_world: WebWorld) -> None:
    cache.clear()
    Assignment.objects.all().delete()
    node_a, node_b = web_world.nodes
    eip1, eip2 = web_world.eips[:2]
    assert _in_use_now(timezone.now()) == 0
    # Cached now; a new assignment must show on the very next request.
    first = services.assignment_open(eip=eip1, node=node_a, spec=web_world.spec, actor="test", confirmed=True)
    assert _in_use_now(timezone.now()) == 1
    second = services.assignment_open(eip=eip2, node=node_b, spec=web_world.spec, actor="test", confirmed=True)
    assert _in_use_now(timezone.now()) == 2
    # A close recorded with a time older than the newest close already seen (two workers racing) still
    # shows: the version counts rows, it does not compare timestamps.
    assert services.assignment_close(assignment=second, reason="test", kind=Assignment.CloseKind.RELEASED)
    Assignment.objects.filter(pk=second.pk).update(closed_at=timezone.now() - dt.timedelta(seconds=1))
    assert _in_use_now(timezone.now()) == 1
    assert services.assignment_close(assignment=first, reason="test", kind=Assignment.CloseKind.RELEASED)
    Assignment.objects.filter(pk=first.pk).update(closed_at=timezone.now() - dt.timedelta(seconds=2))
    assert _in_use_now(timezone.now()) == 0
    # Retention deleting a closed row inside the window changes the past points at once too.
    now = timezone.now()
    old = Assignment.objects.create(eip=eip1, node=node_a, launch_spec=web_world.spec,
                                    opened_at=now - dt.timedelta(hours=5), closed_at=now - dt.timedelta(hours=3))
    (series,) = selectors.pool_use_series(stats=selectors.pool_stats_list(), now=now, hours=24, step_minutes=60)
    assert max(v for _t, v in series.points) == 1
    old.delete()
    (series,) = selectors.pool_use_series(stats=selectors.pool_stats_list(), now=now, hours=24, step_minutes=60)
    assert max(v for _t, v in series.points) == 0


def test_time_to_eip_waits_exact_to_the_microsecond(web_world: WebWorld) -> None:
    """The database computes each wait: a fraction near a whole second, or none at all, stays exact."""
    Node.objects.exclude(eip_ready_at=None).update(eip_ready_at=None)
    base = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=5)
    waits = {
        "under-5": (base.replace(microsecond=104840), base + dt.timedelta(seconds=5, microseconds=104839)),
        "just-under-5": (base, base + dt.timedelta(seconds=4, microseconds=999999)),
        "exactly-5": (base, base + dt.timedelta(seconds=5)),  # both stored without a fraction on SQLite
        "over-a-day-boundary": (base - dt.timedelta(seconds=1, microseconds=1), base + dt.timedelta(seconds=9)),
    }
    for index, (name, (first, ready)) in enumerate(waits.items()):
        make_node(name, spec=web_world.spec, index=60 + index, first_seen_at=first, eip_ready_at=ready)
    histogram = selectors.time_to_eip_histogram()
    assert dict(histogram.buckets)["<5s"] == 2
    assert dict(histogram.buckets)["5–10s"] == 1
    assert dict(histogram.buckets)["10–20s"] == 1
    assert histogram.p50 is not None and abs(histogram.p50 - 5.0) < 1e-6


def test_pool_use_series_counts_each_span_from_its_exact_microsecond(web_world: WebWorld) -> None:
    """The cached spans keep their times to the microsecond: a span opened at a sample counts there, one opened a
    microsecond later does not; one closed at a sample no longer counts there, one closed a microsecond later does.
    The same from the cache as from the first read."""
    cache.clear()
    Assignment.objects.all().delete()
    node_a, node_b = web_world.nodes
    eip1, eip2 = web_world.eips[:2]
    now = timezone.now().replace(microsecond=0)
    hour, tick = dt.timedelta(hours=1), dt.timedelta(microseconds=1)
    opened_at, closed_at = now - 2 * hour, now - 3 * hour  # samples of the 24 h range at one-hour steps
    rows = [(eip1, node_a, opened_at, None), (eip2, node_b, opened_at + tick, None),
            (eip1, node_b, closed_at - hour, closed_at), (eip2, node_a, closed_at - hour, closed_at + tick)]
    for eip, node, opened, closed in rows:
        Assignment.objects.create(eip=eip, node=node, launch_spec=web_world.spec, opened_at=opened,
                                  confirmed_at=opened, closed_at=closed)
    for _read in ("first", "cached"):
        (series,) = selectors.pool_use_series(stats=selectors.pool_stats_list(), now=now, hours=24, step_minutes=60)
        points = dict(series.points)
        assert [points[now - k * hour] for k in (5, 4, 3, 2, 1)] == [0, 2, 1, 1, 2]
