"""The history as CSV or JSONL, streamed in large chunks. The page, the downloads and `export_history`
share this code and `selectors.event_list`, so an export is exactly the filtered set on screen.

Every export ends with a trailer that carries its row count, written only after the last row:
- CSV: a last line `# eipdash export complete: N rows` (one field, so CSV readers see one short row);
- JSONL: a last line `{"_export": {"rows": N, "complete": true}}`.
A file without its trailer, or with a count that differs from the rows in it, was cut. When the database
fails midway the stream raises: no trailer is written and the HTTP response ends without its last chunk.

Speed (bench/export.py): on SQLite and PostgreSQL the database formats the timestamp and neutralises
formulas, rows arrive as tuples in large fetches (PostgreSQL: one streamed statement), rows that need no
CSV quoting are joined directly, and about 1,000 rows go out per chunk: Python does little per row.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C string encoder json.dumps uses
from typing import Any

from django.db import connections
from django.db.models import Case, Expression, F, Func, IntegerField, QuerySet, TextField, Value, When
from django.db.models.functions import Cast, Concat, Replace
from django.db.models.lookups import GreaterThan, In, LessThan

from .models import Event

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
# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection"). Some also
# trim leading whitespace first (" =1+1"), and a cell that starts with a line break hides what follows.
_FORMULA_CHARS = frozenset("=+-@")
_ALWAYS_RISKY = frozenset("\t\r\n")
# Rows per database fetch (SQLite steps its statement; PostgreSQL streams in CHUNK_ROWS pieces) and rows
# per yielded chunk (about 180 KB of CSV: few writes and syscalls, flat memory).
FETCH_ROWS = 10_000
CHUNK_ROWS = 1_000

CSV_TRAILER_PREFIX = "# eipdash export complete: "
JSONL_TRAILER_KEY = "_export"


def neutralise(value: str) -> str:
    """Prefix a quote to a value a spreadsheet would run as a formula, or that starts with a line break."""
    first = value[:1]
    if first in _FORMULA_CHARS or first in _ALWAYS_RISKY:
        return "'" + value
    if first.isspace() and value.lstrip()[:1] in _FORMULA_CHARS:
        return "'" + value
    return value


# Every character str.isspace() (and so str.lstrip()) treats as whitespace, for LTRIM in SQL.
_WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())


class _LTrimChars(Func):
    """LTRIM(text, characters): the same in SQLite and PostgreSQL."""

    function = "LTRIM"
    arity = 2
    output_field = TextField()


class _FirstCodePoint(Func):
    """The code point of the first character (an integer compare is the cheapest test per value)."""

    function = "UNICODE"  # SQLite
    arity = 1
    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="ASCII", **extra)  # the code point in UTF-8


def _codes(characters: Iterable[str]) -> list[int]:
    return sorted(ord(character) for character in characters)


def _neutralised(field: str) -> Expression:
    """`neutralise` in SQL, for SQLite and PostgreSQL: the database checks every value in C, so an export
    pays nothing per row in Python for it (tests hold it to the Python function). LTRIM, the costly
    part, runs only on values whose first character is not printable ASCII (whitespace among them)."""
    value = F(field)
    quoted = Concat(Value("'"), value, output_field=TextField())
    first = _FirstCodePoint(value)
    return Case(
        When(In(first, _codes(_FORMULA_CHARS | _ALWAYS_RISKY)), then=quoted),
        When(
            (LessThan(first, ord("!")) | GreaterThan(first, ord("~")))
            & In(_FirstCodePoint(_LTrimChars(value, Value(_WHITESPACE))), _codes(_FORMULA_CHARS)),
            then=quoted,
        ),
        default=value,
        output_field=TextField(),
    )


def iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class _PgIsoUtc(Func):
    """`iso_utc` in PostgreSQL: microseconds only when there are any, as Python's isoformat."""

    template = (
        "REPLACE(TO_CHAR(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '.000000Z', 'Z')"
    )
    output_field = TextField()


def _timestamp_text(vendor: str) -> Expression | None:
    """The timestamp as `iso_utc` writes it, computed by the database; None: format in Python."""
    if vendor == "sqlite":
        # Django stores an aware datetime on SQLite as naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]";
        # reading it as text skips parsing a datetime per row.
        return Concat(Replace(Cast("timestamp", TextField()), Value(" "), Value("T")), Value("Z"),
                      output_field=TextField())  # fmt: skip
    if vendor == "postgresql":
        return _PgIsoUtc(F("timestamp"))
    return None


def _pg_streams_in_chunks() -> bool:
    """libpq 17 and later send a result in chunks as the server produces it (psycopg's stream(size=...))."""
    # psycopg 3 is the pinned driver (pyproject.toml); imported here so that SQLite runs never load libpq.
    from psycopg import pq

    return bool(pq.version() >= 170000)


def _pg_stream(query: QuerySet[Any]) -> Iterator[list[Sequence[str]]]:
    """PostgreSQL: one statement, streamed. The server computes and sends rows while this process writes
    the previous ones (a server-side cursor would make it wait at every fetch, and WITH HOLD outside a
    transaction would have the server compute the whole result before the first row)."""
    connection = connections[query.db]
    sql, params = query.query.get_compiler(using=query.db).as_sql()
    with connection.wrap_database_errors, connection.cursor() as cursor:
        rows = cursor.cursor.stream(sql, params, size=CHUNK_ROWS)
        while batch := list(itertools.islice(rows, CHUNK_ROWS)):
            yield batch


def _row_batches(events: QuerySet[Event], *, neutralised: bool) -> Iterator[list[Sequence[str]]]:
    """The rows as text in CSV column order, CHUNK_ROWS at a time, from one query; with `neutralised`,
    every value but the timestamp passed through `neutralise`."""
    connection = connections[events.db]
    stamp = _timestamp_text(connection.vendor)
    rows: Iterator[Sequence[Any]]
    if stamp is not None:
        # SQLite and PostgreSQL: the database does the per-value work, rows arrive ready to write.
        columns: dict[str, Expression | F] = {"_export_stamp": stamp}
        for field in _FIELDS[1:]:
            columns[f"_export_{field}"] = _neutralised(field) if neutralised else F(field)
        query = events.annotate(**columns).values_list(*columns)
        if connection.vendor == "postgresql" and _pg_streams_in_chunks():
            yield from _pg_stream(query)
            return
        rows = query.iterator(chunk_size=FETCH_ROWS)
    else:
        # Any other database: the same values, computed in Python.
        def python_rows() -> Iterator[Sequence[str]]:
            for row in events.values_list(*_FIELDS).iterator(chunk_size=FETCH_ROWS):
                rest = [neutralise(value) for value in row[1:]] if neutralised else list(row[1:])
                yield [iso_utc(row[0]), *rest]

        rows = python_rows()
    while batch := list(itertools.islice(rows, CHUNK_ROWS)):
        yield batch


class _Echo:
    """csv.writer wants a file; this one hands each formatted line straight back."""

    def write(self, value: str) -> str:
        return value


_SEPARATORS = len(CSV_COLUMNS) - 1


def _csv_text(batch: list[Sequence[str]], writer: Any) -> str:
    """The batch as CSV lines, exactly as csv.writer (QUOTE_MINIMAL, "\r\n") writes them, faster.

    csv.writer costs microseconds a row; most rows need no quoting at all, and for those its output is the
    values joined by commas. A value needs quoting only if it holds a comma, a quote or a line break, which
    shows on the joined line as an extra comma or one of those characters: only such rows go through
    csv.writer."""
    lines = list(map(",".join, batch))
    for index, line in enumerate(lines):
        if line.count(",") != _SEPARATORS or '"' in line or "\n" in line or "\r" in line:
            lines[index] = writer.writerow(batch[index])[:-2]
    lines.append("")
    return "\r\n".join(lines)


def csv_trailer(rows: int) -> str:
    return f"{CSV_TRAILER_PREFIX}{rows} rows\r\n"


def csv_chunks(events: QuerySet[Event]) -> Iterator[str]:
    """The header and the first batch come in the first chunk, the trailer after the last row."""
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    header = writer.writerow(CSV_COLUMNS)
    rows = 0
    for batch in _row_batches(events, neutralised=True):
        rows += len(batch)
        yield header + _csv_text(batch, writer)
        header = ""
    yield header + csv_trailer(rows)


def jsonl_trailer(rows: int) -> str:
    return f'{{"{JSONL_TRAILER_KEY}": {{"rows": {rows}, "complete": true}}}}\n'


# What json.dumps(record, ensure_ascii=False) writes for a record of strings, filled in with the same
# C string encoder, without building a dict per row.
_JSONL_LINE = "{" + ", ".join(f'"{column}": %s' for column in CSV_COLUMNS) + "}\n"


def jsonl_chunks(events: QuerySet[Event]) -> Iterator[str]:
    # JSON is data, not a spreadsheet: values stay exactly as recorded. JSON escapes the C0 controls, but
    # writes U+0085, U+2028 and U+2029 raw, and str.splitlines() ends a line on each (JavaScript on the last
    # two): escape them, so that a record is one line to every reader. str.replace, not translate: it stays a
    # scan in C of each chunk.
    rows = 0
    for batch in _row_batches(events, neutralised=False):
        rows += len(batch)
        text = "".join([_JSONL_LINE % tuple(map(encode_basestring, row)) for row in batch])
        yield text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    yield jsonl_trailer(rows)


FORMATS = {
    "csv": (csv_chunks, "text/csv; charset=utf-8"),
    "jsonl": (jsonl_chunks, "application/x-ndjson; charset=utf-8"),
}


def open_export(events: QuerySet[Event], fmt: str) -> Iterator[str]:
    """The export's chunks, started: the query has run and its first chunk is rendered, so that a caller
    answers 200 (or writes anything) only once the body is known to start well. A failure here raises
    before anything is sent; a later one raises midway and leaves the trailer out."""
    render, _content_type = FORMATS[fmt]
    chunks = render(events)
    first = next(chunks)
    return itertools.chain((first,), chunks)

