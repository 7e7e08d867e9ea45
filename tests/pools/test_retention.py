"""prune_history on a seeded record: old history goes, nothing open or recent does."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from pools.models import Assignment, Event, Node
from pools.retention import parse_age, prune_history
from pools.vocabulary import CONFIG_KINDS
from tests.fixtures.web import WebWorld, assign, make_eip, make_node, record

OLD = dt.timedelta(days=120)


def _close(assignment: Assignment, at: dt.datetime) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(closed_at=at, close_reason="released", close_kind="released")


@pytest.fixture
def seeded(web_world: WebWorld) -> dict[str, object]:
    """Old and recent rows of every kind, and the old rows that must survive."""
    now = timezone.now()
    spec = web_world.spec
    long_ago = now - OLD
    old_events = [record("assigned", spec=spec, at=long_ago - dt.timedelta(minutes=i)) for i in range(7)]
    recent_event = record("released", spec=spec, at=now - dt.timedelta(days=89))
    # A node gone long ago with its closed assignment: both go.
    gone = make_node("gone-old", spec=spec, index=50, deleted_at=long_ago, last_seen_at=long_ago,
                     first_seen_at=long_ago - dt.timedelta(days=1))
    gone_claim = assign(make_eip(50), gone, opened_at=long_ago - dt.timedelta(hours=1))
    _close(gone_claim, long_ago)
    # A node gone long ago that still holds an open assignment (a release that never happened): kept,
    # with its assignment, however old.
    held = make_node("gone-holding", spec=spec, index=51, deleted_at=long_ago, last_seen_at=long_ago,
                     first_seen_at=long_ago - dt.timedelta(days=1))
    held_claim = assign(make_eip(51), held, opened_at=long_ago)
    # A node gone long ago whose last claim closed recently: kept, as is that claim.
    late = make_node("gone-late-close", spec=spec, index=52, deleted_at=long_ago, last_seen_at=long_ago,
                     first_seen_at=long_ago - dt.timedelta(days=1))
    late_claim = assign(make_eip(52), late, opened_at=long_ago)
    _close(late_claim, now - dt.timedelta(days=3))
    # A node gone recently: kept.
    recent_gone = make_node("gone-recent", spec=spec, index=53, deleted_at=now - dt.timedelta(days=2))
    return {"old_events": old_events, "recent_event": recent_event, "gone": gone, "gone_claim": gone_claim,
            "held": held, "held_claim": held_claim, "late": late, "late_claim": late_claim,
            "recent_gone": recent_gone}


def test_prune_history_deletes_only_old_closed_and_gone(seeded: dict[str, object], web_world: WebWorld) -> None:
    before_events = Event.objects.count()
    live_nodes = set(Node.objects.filter(deleted_at__isnull=True).values_list("name", flat=True))
    open_claims = set(Assignment.objects.filter(closed_at__isnull=True).values_list("pk", flat=True))
    out = StringIO()
    # A batch of 3: several batches per table.
    call_command("prune_history", "--older-than", "90d", "--batch-size", "3", stdout=out)
    assert out.getvalue().startswith("deleted 7 events, 1 closed assignments, 1 gone nodes")

    assert Event.objects.count() == before_events - 7
    assert not Event.objects.filter(timestamp__lt=timezone.now() - dt.timedelta(days=90)).exists()
    assert Event.objects.filter(pk=seeded["recent_event"].pk).exists()  # type: ignore[attr-defined]
    assert not Node.objects.filter(name="gone-old").exists()
    assert not Assignment.objects.filter(pk=seeded["gone_claim"].pk).exists()  # type: ignore[attr-defined]
    # Kept: every open assignment and its node, the node whose claim closed recently, the recent gone
    # node and every live node.
    assert set(Assignment.objects.filter(closed_at__isnull=True).values_list("pk", flat=True)) == open_claims
    assert Node.objects.filter(name__in=["gone-holding", "gone-late-close", "gone-recent"]).count() == 3
    assert Assignment.objects.filter(pk=seeded["late_claim"].pk).exists()  # type: ignore[attr-defined]
    assert live_nodes <= set(Node.objects.values_list("name", flat=True))

    # A second run has nothing left to do.
    out = StringIO()
    call_command("prune_history", "--older-than", "90d", stdout=out)
    assert out.getvalue().startswith("deleted 0 events, 0 closed assignments, 0 gone nodes")


def test_prune_history_task_follows_the_setting(seeded: dict[str, object], settings: object) -> None:
    from workers.tasks import prune_history as task

    settings.EIPDASH_RETENTION_DAYS = 0  # type: ignore[attr-defined]
    assert task() == "retention off (EIPDASH_RETENTION_DAYS=0)"
    assert Node.objects.filter(name="gone-old").exists()
    settings.EIPDASH_RETENTION_DAYS = 90  # type: ignore[attr-defined]
    assert task().startswith("deleted 7 events, 1 closed assignments, 1 gone nodes")


def test_the_beat_runs_prune_history_daily() -> None:
    from eipdash.celery import app

    entry = app.conf.beat_schedule["prune-history"]
    assert entry["task"] == "workers.tasks.prune_history"
    assert app.tasks  # the task is registered under that name once the workers' tasks are imported
    from workers import tasks

    assert tasks.prune_history.name == entry["task"]


@pytest.mark.parametrize("bad", ["0d", "90", "3w", "-1d", ""])
def test_bad_ages_are_refused(bad: str, db: None) -> None:
    with pytest.raises(ValueError):
        parse_age(bad)
    with pytest.raises(CommandError):
        call_command("prune_history", "--older-than", bad)


def test_prune_keeps_everything_newer_than_the_cutoff(web_world: WebWorld) -> None:
    counts = prune_history(cutoff=timezone.now() - dt.timedelta(days=1))
    assert (counts.events, counts.assignments, counts.nodes) == (0, 0, 0)
    assert parse_age("90d") == dt.timedelta(days=90)


@pytest.mark.django_db
def test_configuration_events_are_kept_as_long_as_assignment_events() -> None:
    """An auditor's "who changed this" outlives no assignment event, and is not kept past the same cutoff."""
    now = timezone.now()
    cutoff = now - dt.timedelta(days=90)
    for kind in (Event.Kind.ASSIGNED, *sorted(CONFIG_KINDS)):
        record(kind, at=cutoff - dt.timedelta(seconds=1), reason="older")
        record(kind, at=cutoff + dt.timedelta(seconds=1), reason="newer")
    prune_history(cutoff=cutoff)
    assert set(Event.objects.values_list("kind", "reason")) == {
        (kind, "newer") for kind in (Event.Kind.ASSIGNED, *CONFIG_KINDS)}
