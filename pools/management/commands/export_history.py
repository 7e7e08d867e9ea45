"""`manage.py export_history`: the history as CSV or JSONL on stdout, filtered like the dashboard.

The output ends with the same trailer as the downloads (see pools/exports.py): a file without it is
incomplete. Bad filters exit 2 before anything is written; a failure midway exits 1 without the trailer.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from pools.exports import FORMATS, open_export
from pools.forms import HistoryFilterForm
from pools.models import Event
from pools.selectors import EventFilters, event_list

# A usage error, as argparse exits for an unknown option.
BAD_FILTER = 2


def parse_moment(raw: str | None, option: str) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise CommandError(
            f"{option} {raw!r} is not an ISO 8601 date or time (e.g. 2024-05-01T03:12:00Z)", returncode=BAD_FILTER
        ) from exc
    # A time without offset is UTC, as everywhere in eipdash.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


class Command(BaseCommand):
    help = "Write the history (audit events) to stdout as CSV or JSONL, ending with a row-count trailer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=sorted(FORMATS), default="csv")
        parser.add_argument("--since", help="ISO 8601; events at or after this time (UTC if no offset)")
        parser.add_argument("--until", help="ISO 8601; events before this time (UTC if no offset)")
        parser.add_argument("--spec", default="", help="launch spec name")
        parser.add_argument("--event", default="", choices=[""] + list(Event.Kind.values), help="event kind")
        parser.add_argument("--q", default="", help="free text, as the dashboard's search")

    def filters(self, options: dict[str, Any]) -> EventFilters:
        """The dashboard's form validates, so that the command refuses exactly what the downloads refuse."""
        since = parse_moment(options["since"], "--since")
        until = parse_moment(options["until"], "--until")
        if since and until and since >= until:
            raise CommandError("--since must be before --until", returncode=BAD_FILTER)
        form = HistoryFilterForm(
            {"since": since, "until": until, "spec": options["spec"], "event": options["event"], "q": options["q"]}
        )
        if not form.is_valid():
            problems = "; ".join(f"--{name}: {' '.join(str(e) for e in errs)}" for name, errs in form.errors.items())
            raise CommandError(f"bad filter: {problems}", returncode=BAD_FILTER)
        return form.filters()

    def handle(self, *args: Any, **options: Any) -> None:
        filters = self.filters(options)
        # call_command(stdout=...) passes a stream; from the shell it is sys.stdout, written as bytes
        # through its buffer (no text layer per chunk).
        target: IO[str] = options.get("stdout") or sys.stdout
        binary = getattr(target, "buffer", None)
        try:
            chunks = open_export(event_list(filters=filters), options["format"])
            for chunk in chunks:
                if binary is not None:
                    binary.write(chunk.encode())
                else:
                    target.write(chunk)
            (binary or target).flush()
        except DatabaseError as exc:
            raise CommandError(f"export failed: {exc}; the output is incomplete (it has no trailer)") from exc
        except BrokenPipeError:
            # The reader went away (`| head`): say so on stderr, and keep Python's exit-time flush of
            # stdout from failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise CommandError("stdout closed before the end: the output is incomplete") from None
