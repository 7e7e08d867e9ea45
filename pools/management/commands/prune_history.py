"""`manage.py prune_history --older-than 90d`: delete history events, closed assignments and gone nodes
older than the cutoff, in batches; prints what it deleted. Never an open assignment, a node with one, or
anything newer than the cutoff (see pools/retention.py). The beat runs the same daily (EIPDASH_RETENTION_DAYS).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from pools.retention import DEFAULT_BATCH_SIZE, parse_age, prune_history


class Command(BaseCommand):
    help = "Delete history events, closed assignments and gone nodes older than --older-than (e.g. 90d)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", default=None,
                            help="age like 90d (default: EIPDASH_RETENTION_DAYS, 90)")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than"] is None and settings.EIPDASH_RETENTION_DAYS == 0:
            raise CommandError("EIPDASH_RETENTION_DAYS is 0 (retention off): give --older-than", returncode=2)
        raw = options["older_than"] if options["older_than"] is not None else f"{settings.EIPDASH_RETENTION_DAYS}d"
        try:
            age = parse_age(raw)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1", returncode=2)
        cutoff = timezone.now() - age
        counts = prune_history(cutoff=cutoff, batch_size=options["batch_size"])
        self.stdout.write(f"{counts.line()} (older than {cutoff:%Y-%m-%dT%H:%M:%SZ})")
