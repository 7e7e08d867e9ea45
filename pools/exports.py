"""The history as CSV or JSONL, streamed row by row. The page, the downloads and `export_history`
share this code and `selectors.event_list`, so an export is exactly the filtered set on screen.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence

from django.db.models import QuerySet

from .models import Event
from .selectors import PoolStats

CSV_COLUMNS = (
    "timestamp",
    "event",
    "launch_spec",
    "cluster",
    "region",
    "node",
    "instance_id",
    "public_ip",
    "allocation_id",
    "actor",
    "reason",
)
# The model field behind each column ("event" is the kind).
_FIELDS = tuple("kind" if column == "event" else column for column in CSV_COLUMNS)
# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
# Tab and carriage return are on OWASP's list too.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_CHUNK = 2000


def neutralise(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


def iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def event_records(events: QuerySet[Event]) -> Iterator[dict[str, str]]:
    """Plain dicts in CSV column order. values_list + iterator: a million rows never sit in memory."""
    for row in events.values_list(*_FIELDS).iterator(chunk_size=_CHUNK):
        record = dict(zip(CSV_COLUMNS, row, strict=True))
        record["timestamp"] = iso_utc(row[0])
        yield record


class _Echo:
    """csv.writer wants a file; this one hands each formatted line straight back."""

    def write(self, value: str) -> str:
        return value


def csv_lines(events: QuerySet[Event]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    yield writer.writerow(CSV_COLUMNS)
    for record in events_records_neutralised(events):
        yield writer.writerow(record)


def events_records_neutralised(events: QuerySet[Event]) -> Iterator[list[str]]:
    for record in event_records(events):
        yield [neutralise(str(record[column])) for column in CSV_COLUMNS]


def jsonl_lines(events: QuerySet[Event]) -> Iterator[str]:
    # JSON is data, not a spreadsheet: values stay exactly as recorded.
    for record in event_records(events):
        yield json.dumps(record, ensure_ascii=False) + "\n"


FORMATS = {
    "csv": (csv_lines, "text/csv; charset=utf-8"),
    "jsonl": (jsonl_lines, "application/x-ndjson; charset=utf-8"),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(*, stats: Sequence[PoolStats], events_by_kind: Mapping[str, int]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}")

    def per_spec(attr: str) -> list[tuple[str, float]]:
        return [(f'launch_spec="{_label(row.spec.name)}"', getattr(row, attr)) for row in stats]

    family("eipdash_pool_size", "gauge", "EIPs in the pool of a launch spec (tag selector).", per_spec("pool_size"))
    family("eipdash_pool_in_use", "gauge", "Pool EIPs held by a node (open assignment).", per_spec("in_use"))
    family("eipdash_pool_free", "gauge", "Pool EIPs free to hand out.", per_spec("free"))
    family("eipdash_pool_conflict", "gauge", "Pool EIPs associated outside eipdash's record.", per_spec("conflict"))
    family("eipdash_nodes_waiting", "gauge", "Nodes still waiting for an EIP.", per_spec("waiting_nodes"))
    family(
        "eipdash_nodes_draining_holding",
        "gauge",
        "Draining nodes that still hold an EIP.",
        per_spec("draining_holding"),
    )
    family(
        "eipdash_events_total",
        "counter",
        "History events recorded, by kind.",
        [(f'kind="{_label(kind)}"', count) for kind, count in sorted(events_by_kind.items())],
    )
    return "\n".join(lines) + "\n"
