"""`manage.py export_history`: the history as CSV or JSONL on stdout, filtered like the dashboard."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pools.exports import FORMATS
from pools.models import Event
from pools.selectors import EventFilters, event_list


def parse_moment(raw: str | None, option: str) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise CommandError(f"{option} {raw!r} is not an ISO 8601 date or time (e.g. 2024-05-01T03:12:00Z)") from exc
    # A time without offset is UTC, as everywhere in eipdash.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


class Command(BaseCommand):
    help = "Write the history (audit events) to stdout as CSV or JSONL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=sorted(FORMATS), default="csv")
        parser.add_argument("--since", help="ISO 8601; events at or after this time (UTC if no offset)")
        parser.add_argument("--until", help="ISO 8601; events before this time (UTC if no offset)")
        parser.add_argument("--spec", default="", help="launch spec name")
        parser.add_argument("--event", default="", choices=[""] + list(Event.Kind.values), help="event kind")
        parser.add_argument("--q", default="", help="free text, as the dashboard's search")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = EventFilters(
            since=parse_moment(options["since"], "--since"),
            until=parse_moment(options["until"], "--until"),
            spec=options["spec"],
            event=options["event"],
            q=options["q"],
        )
        if filters.since and filters.until and filters.since >= filters.until:
            raise CommandError("--since must be before --until")
        render_lines, _content_type = FORMATS[options["format"]]
        for line in render_lines(event_list(filters=filters)):
            self.stdout.write(line, ending="")
