"""Retention: history events, closed assignments and gone nodes older than a cutoff are deleted, in batches.

Batches keep memory and lock time bounded whatever the table size: each batch is one short transaction of
its own. What is never deleted: an open assignment, a node that any assignment still refers to (an open
one above all), a node Kubernetes still lists, and anything newer than the cutoff. Each delete states its
conditions again, so a row that changed since it was picked (a node name that came back) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Model, ProtectedError, QuerySet

from .models import Assignment, Event, Node

DEFAULT_BATCH_SIZE = 1000
_AGE = re.compile(r"^\s*(\d+)\s*d\s*$")


def parse_age(text: str) -> timedelta:
    """``90d`` → 90 days. Days only, at least one: retention is a matter of days, and ``0d`` would
    delete the history of today."""
    match = _AGE.match(text or "")
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"expected a number of days like 90d (at least 1d), not {text!r}")
    return timedelta(days=int(match.group(1)))


@dataclass
class PruneCounts:
    events: int = 0
    assignments: int = 0
    nodes: int = 0

    def line(self) -> str:
        return f"deleted {self.events} events, {self.assignments} closed assignments, {self.nodes} gone nodes"


def _in_batches(candidates: Callable[[], QuerySet[Model]], *, batch_size: int) -> int:
    """Delete what ``candidates()`` selects, ``batch_size`` rows per transaction, until nothing is left.
    The batch's delete re-applies the same conditions to the picked keys."""
    deleted = 0
    skipped: set[int] = set()
    while True:
        picked = list(candidates().exclude(pk__in=skipped).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not picked:
            return deleted
        try:
            with transaction.atomic():
                count, _ = candidates().filter(pk__in=picked).delete()
        except (ProtectedError, IntegrityError):
            # A row became referenced between the pick and the delete (a node back with a new claim):
            # keep this batch's rows for now; the next run looks at them again.
            skipped.update(picked)
            continue
        deleted += count
        if count == 0:
            skipped.update(picked)  # changed meanwhile and no longer eligible


def prune_history(*, cutoff: datetime, batch_size: int = DEFAULT_BATCH_SIZE) -> PruneCounts:
    counts = PruneCounts()
    counts.events = _in_batches(lambda: Event.objects.filter(timestamp__lt=cutoff), batch_size=batch_size)
    counts.assignments = _in_batches(
        lambda: Assignment.objects.filter(closed_at__isnull=False, closed_at__lt=cutoff), batch_size=batch_size
    )
    # After the assignments: a gone node goes only once no assignment (open or closed) refers to it.
    counts.nodes = _in_batches(
        lambda: Node.objects.filter(deleted_at__isnull=False, deleted_at__lt=cutoff, last_seen_at__lt=cutoff)
        .exclude(pk__in=Assignment.objects.values("node_id")),
        batch_size=batch_size,
    )
    return counts
