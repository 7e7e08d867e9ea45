"""History exports: the columns and their order, formula neutralisation, exactly the filtered set, the
same code behind the downloads and `manage.py export_history`, the row-count trailer, bad filters refused
up front, and a failure midway that leaves the trailer out."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection
from django.test import Client
from django.urls import reverse

from bench.export import seed_events
from pools import exports
from pools.exports import CSV_COLUMNS, iso_utc, neutralise
from pools.models import Event
from pools.selectors import EventFilters, event_list
from tests.fixtures.web import WebWorld, record

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)
EXPECTED_COLUMNS = [
    "timestamp", "event", "launch_spec", "cluster", "region", "node", "instance_id", "public_ip", "allocation_id",
    "actor", "reason",
]  # fmt: skip


@pytest.fixture
def night(web_world: WebWorld) -> WebWorld:
    """Events around 03:12 on one night, for two specs and several kinds."""
    w = web_world
    eip, node = w.eips[0], w.nodes[0]
    record(Event.Kind.ASSIGNED, spec=w.spec, eip=eip, node=node, at=T0, reason="new node")
    record(Event.Kind.ERROR, spec=w.spec, eip=eip, node=node, at=T0 + dt.timedelta(minutes=12), reason="=HYPERLINK(1)")
    record(Event.Kind.RELEASED, spec=w.spec, eip=eip, node=node, at=T0 + dt.timedelta(minutes=13), reason="-drained")
    record(Event.Kind.REASSIGNED, spec=w.spec, eip=eip, node=node, at=T0 + dt.timedelta(minutes=20),
           reason="@by hand, with, commas", actor="+olivia")  # fmt: skip
    Event.objects.create(timestamp=T0 + dt.timedelta(minutes=14), kind=Event.Kind.CONFLICT, launch_spec="other",
                         reason="foreign instance")  # fmt: skip
    return w


CSV_TRAILER = re.compile(r"# eipdash export complete: (\d+) rows\r\n\Z")


def _csv(body: bytes) -> list[dict[str, str]]:
    """The data rows of a complete CSV export; fails when the trailer is missing or miscounts."""
    text = body.decode()
    trailer = CSV_TRAILER.search(text)
    assert trailer, f"no trailer at the end: {text[-200:]!r}"
    rows = list(csv.DictReader(io.StringIO(text[: trailer.start()], newline="")))
    assert int(trailer.group(1)) == len(rows)
    return rows


def _jsonl(body: bytes) -> list[dict[str, str]]:
    # Split on "\n" only: str.splitlines() also splits on characters JSON leaves raw (U+0085).
    *records, last = [json.loads(line) for line in body.decode().split("\n")[:-1]]
    assert last == {"_export": {"rows": len(records), "complete": True}}
    return records


def _stream(response) -> bytes:
    assert response.streaming, "exports must stream"
    return b"".join(response.streaming_content)


def test_neutralise() -> None:
    assert [neutralise(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "ok", "", "a=b")] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "ok", "", "a=b",
    ]  # fmt: skip


# Leading whitespace before a formula character, and a leading line break: the cases issue 7 item 10 names,
# plus the rest of what str.isspace() calls whitespace, and values that only look close.
TRICKY = [
    " =1+1", "  +1", "\u00a0=1", "\u3000@x", "\u2028-1", "\x85=1", " \t =1", "\n=1", "\nplain", "\r\nx",
    " plain", " ", "", "ok", "a=b", "é=1", "😀=1", "'=1", "\u200b=1", "x\n=1",
]  # fmt: skip
TRICKY_NEUTRALISED = [
    "' =1+1", "'  +1", "'\u00a0=1", "'\u3000@x", "'\u2028-1", "'\x85=1", "' \t =1", "'\n=1", "'\nplain",
    "'\r\nx", " plain", " ", "", "ok", "a=b", "é=1", "😀=1", "'=1", "\u200b=1", "x\n=1",
]  # fmt: skip


def test_neutralise_leading_whitespace_and_line_breaks() -> None:
    # U+200B (zero width space) is not whitespace to Python, and a spreadsheet does not trim it either.
    assert [neutralise(v) for v in TRICKY] == TRICKY_NEUTRALISED


def test_the_database_neutralises_every_column_as_the_python_function(viewer_client: Client, db: None) -> None:
    """SQLite and PostgreSQL do the check in SQL for speed: it must agree with `neutralise` everywhere."""
    columns = [field for field in exports._FIELDS[1:] if field != "kind"]
    for index, value in enumerate(TRICKY):
        Event.objects.create(
            timestamp=T0 + dt.timedelta(seconds=index), kind=Event.Kind.ERROR,
            **{field: value[: Event._meta.get_field(field).max_length or None] for field in columns},
        )  # fmt: skip
    rows = _csv(_stream(viewer_client.get(reverse("history-export-csv"))))
    by_reason = {row["reason"]: row for row in rows}
    assert sorted(by_reason) == sorted(TRICKY_NEUTRALISED)
    for value, expected in zip(TRICKY, TRICKY_NEUTRALISED, strict=True):
        row = by_reason[expected]
        for field in columns:
            short = value[: Event._meta.get_field(field).max_length or None]
            assert row[field] == neutralise(short), (field, value)
    # The kind column goes through the same expression: a row written by hand is neutralised too.
    Event.objects.all().update(kind="=cmd")
    assert {row["event"] for row in _csv(_stream(viewer_client.get(reverse("history-export-csv"))))} == {"'=cmd"}


def test_jsonl_escapes_line_separators_and_keeps_values_raw(viewer_client: Client, db: None) -> None:
    reason = "a\u2028b\u2029c =1 \u0085"
    Event.objects.create(timestamp=T0, kind=Event.Kind.ERROR, reason=reason, node=" =1+1")
    body = _stream(viewer_client.get(reverse("history-export-jsonl")))
    assert "\u2028".encode() not in body and "\u2029".encode() not in body
    assert b"a\\u2028b\\u2029c" in body  # a JavaScript parser sees the escape, not a line end
    [line] = _jsonl(body)
    assert line["reason"] == reason and line["node"] == " =1+1"
    # Byte for byte what json.dumps writes, U+0085, U+2028 and U+2029 aside.
    expected = json.dumps(line, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    assert body.decode().split("\n")[0] == expected.replace("\u0085", "\\u0085")


def test_jsonl_escapes_every_character_splitlines_breaks_on(viewer_client: Client, db: None) -> None:
    """A reader that splits with str.splitlines() read one record as two: U+0085 (NEL) went out raw. JSON escapes
    the C0 controls itself; the others (U+0085, U+2028, U+2029) are the export's to escape."""
    breaks = "".join(chr(code) for code in range(0x110000) if len(f"a{chr(code)}b".splitlines()) == 2)
    assert set(breaks) >= set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    reason = "a" + "b".join(breaks) + "\r\nz"
    Event.objects.create(timestamp=T0, kind=Event.Kind.ERROR, reason=reason, node=breaks)
    body = _stream(viewer_client.get(reverse("history-export-jsonl"))).decode()
    record_line, trailer = body.splitlines()
    assert json.loads(record_line)["reason"] == reason and json.loads(record_line)["node"] == breaks
    assert json.loads(trailer) == {"_export": {"rows": 1, "complete": True}}


def test_csv_columns_order_and_neutralisation(viewer_client: Client, night: WebWorld) -> None:
    response = viewer_client.get(
        reverse("history-export-csv"), {"since": "2026-03-01T00:00:00Z", "until": "2026-03-02T00:00:00Z"}
    )
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = _stream(response)
    assert body.decode().splitlines()[0] == ",".join(EXPECTED_COLUMNS) == ",".join(CSV_COLUMNS)
    rows = _csv(body)
    assert [r["event"] for r in rows] == ["reassigned", "conflict", "released", "error", "assigned"]
    reassigned = rows[0]
    assert reassigned["timestamp"] == "2026-03-01T03:20:00Z"
    assert reassigned["reason"] == "'@by hand, with, commas"
    assert reassigned["actor"] == "'+olivia"
    assert (reassigned["launch_spec"], reassigned["cluster"], reassigned["region"]) == ("egress", "prod", "us-east-1")
    assert (reassigned["node"], reassigned["public_ip"]) == ("node-a", "203.0.113.1")
    assert rows[2]["reason"] == "'-drained" and rows[3]["reason"] == "'=HYPERLINK(1)"


def test_jsonl_has_the_same_keys_and_raw_values(viewer_client: Client, night: WebWorld) -> None:
    response = viewer_client.get(
        reverse("history-export-jsonl"), {"since": "2026-03-01T00:00:00Z", "until": "2026-03-02T00:00:00Z"}
    )
    lines = _jsonl(_stream(response))
    assert [list(line) for line in lines] == [EXPECTED_COLUMNS] * 5
    assert lines[0]["reason"] == "@by hand, with, commas" and lines[0]["event"] == "reassigned"


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-03-01T03:10:00Z", "until": "2026-03-01T03:15:00Z"},
        {"spec": "egress"},
        {"event": "error"},
        {"q": "drained"},
        {"spec": "egress", "event": "released", "since": "2026-03-01T03:00"},
        {},
    ],
)
def test_export_is_exactly_the_filtered_page(viewer_client: Client, night: WebWorld, params: dict[str, str]) -> None:
    page = viewer_client.get(reverse("history"), params)
    on_page = [event.pk for event in page.context["page"].events]
    exported = _csv(_stream(viewer_client.get(reverse("history-export-csv"), params)))
    expected = list(Event.objects.filter(pk__in=on_page).order_by("-timestamp", "-id"))
    assert len(exported) == len(on_page) > 0
    assert [(r["timestamp"], r["event"], r["node"]) for r in exported] == [
        (iso_utc(e.timestamp), e.kind, e.node) for e in expected
    ]


def test_the_page_links_to_exports_with_its_filters(viewer_client: Client, night: WebWorld) -> None:
    html = viewer_client.get(reverse("history"), {"event": "error", "before": "x_1"}).content.decode()
    assert 'href="/history/export.csv?event=error"' in html
    assert 'href="/history/export.jsonl?event=error"' in html


def test_export_refuses_unreadable_filters(viewer_client: Client, night: WebWorld) -> None:
    response = viewer_client.get(reverse("history-export-csv"), {"since": "yesterday-ish"})
    assert response.status_code == 400 and b"since" in response.content


def test_export_requires_login(client: Client, night: WebWorld) -> None:
    assert client.get(reverse("history-export-csv")).status_code == 302
    assert client.get(reverse("history-export-jsonl")).status_code == 302


def test_command_writes_the_same_csv(viewer_client: Client, night: WebWorld) -> None:
    out = io.StringIO()
    call_command("export_history", "--since", "2026-03-01T03:10:00Z", "--until", "2026-03-01T03:15", stdout=out)
    web = _stream(viewer_client.get(reverse("history-export-csv"),
                                    {"since": "2026-03-01T03:10:00Z", "until": "2026-03-01T03:15:00Z"}))  # fmt: skip
    assert out.getvalue() == web.decode()
    assert [r["event"] for r in _csv(out.getvalue().encode())] == ["conflict", "released", "error"]


def test_command_jsonl_filters_by_spec_and_event(night: WebWorld) -> None:
    out = io.StringIO()
    call_command("export_history", "--format", "jsonl", "--spec", "egress", "--event", "released", stdout=out)
    lines = _jsonl(out.getvalue().encode())
    assert [(line["event"], line["launch_spec"], line["reason"]) for line in lines] == [
        ("released", "egress", "-drained")
    ]


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_command_rejects_bad_dates(night: WebWorld, option: str) -> None:
    with pytest.raises(CommandError, match=f"{option} 'last tuesday' is not an ISO 8601"):
        call_command("export_history", option, "last tuesday", stdout=io.StringIO())


def test_export_streams_many_rows_in_large_chunks(night: WebWorld) -> None:
    Event.objects.bulk_create(
        Event(timestamp=T0 - dt.timedelta(seconds=i), kind=Event.Kind.ASSIGNED, launch_spec="bulk") for i in range(5000)
    )
    chunks = list(exports.csv_chunks(event_list(filters=EventFilters(spec="bulk"))))
    # The header rides with the first rows; then a chunk per CHUNK_ROWS rows; the trailer last.
    assert chunks[0].startswith("timestamp,event")
    assert len(chunks) == 5000 // exports.CHUNK_ROWS + 1
    assert chunks[-1].endswith("# eipdash export complete: 5000 rows\r\n")
    assert len(_csv("".join(chunks).encode())) == 5000


def test_an_empty_export_still_ends_with_its_trailer(viewer_client: Client, night: WebWorld) -> None:
    nothing = {"until": "1971-01-01T00:00:00"}
    csv_body = _stream(viewer_client.get(reverse("history-export-csv"), nothing))
    assert csv_body.decode() == ",".join(CSV_COLUMNS) + "\r\n# eipdash export complete: 0 rows\r\n"
    jsonl_body = _stream(viewer_client.get(reverse("history-export-jsonl"), nothing))
    assert jsonl_body == b'{"_export": {"rows": 0, "complete": true}}\n'


EDGE_DATES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("params", [{"since": EDGE_DATES[0]}, {"until": EDGE_DATES[1]}, {"event": "nope"},
                                    {"spec": "nothing-here"}])
def test_export_refuses_bad_filters_up_front(viewer_client: Client, night: WebWorld, fmt: str,
                                             params: dict[str, str]) -> None:  # fmt: skip
    response = viewer_client.get(reverse(f"history-export-{fmt}"), params)
    assert response.status_code == 400 and not response.streaming
    assert next(iter(params)).encode() in response.content


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", EDGE_DATES[0]], "--since: out of range"),
        (["--until", EDGE_DATES[1]], "--until: out of range"),
        (["--since", "2026-03-02", "--until", "2026-03-01"], "--since must be before --until"),
        (["--spec", "x" * 300], "--spec: Ensure this value has at most 253 characters"),
        (["--spec", "nosuch"], "--spec: no launch spec and no history named 'nosuch'"),
    ],
)
def test_command_refuses_bad_filters_with_exit_2(night: WebWorld, args: list[str], message: str) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError, match=re.escape(message)) as refused:
        call_command("export_history", *args, stdout=out)
    assert refused.value.returncode == 2 and out.getvalue() == ""


def test_a_deleted_specs_history_stays_exportable_by_name(night: WebWorld) -> None:
    Event.objects.create(timestamp=dt.datetime.now(dt.UTC), kind=Event.Kind.RELEASED, launch_spec="retired-spec",
                         reason="drained")
    out = io.StringIO()
    call_command("export_history", "--spec", "retired-spec", stdout=out)
    assert "retired-spec" in out.getvalue() and "export complete: 1 rows" in out.getvalue()


def test_the_real_command_exits_2_on_a_bad_filter_and_writes_nothing() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true"}
    done = subprocess.run([sys.executable, "manage.py", "export_history", "--since", EDGE_DATES[0]], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--since: out of range" in done.stderr and done.stdout == ""


# --- A database failure: before the first chunk it is a 500; midway, the stream ends without a trailer.


def _break_row(event_id: int) -> None:
    """Make one stored row unreadable. SQLite: bytes that are not UTF-8 in a text column, which the
    driver refuses to decode when the row is fetched (what a corrupt or hand-edited file gives)."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pools_event SET reason = CAST(X'ff' AS TEXT) WHERE id = %s", [event_id])


sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'", reason="PostgreSQL stores only valid UTF-8")


@sqlite_only
def test_a_failure_on_the_first_fetch_is_a_500_not_a_200(viewer: User, night: WebWorld) -> None:
    _break_row(Event.objects.order_by("-timestamp", "-id").first().pk)
    client = Client(raise_request_exception=False)
    client.force_login(viewer)
    for fmt in ("csv", "jsonl"):
        assert client.get(reverse(f"history-export-{fmt}")).status_code == 500


def _many_then_broken(viewer: User) -> Client:
    """More rows than one fetch, then an unreadable one: the failure comes after the 200 went out."""
    seed_events(exports.FETCH_ROWS + exports.CHUNK_ROWS)
    _break_row(Event.objects.order_by("timestamp", "id").first().pk)
    client = Client()
    client.force_login(viewer)
    return client


@sqlite_only
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_failure_midway_ends_the_stream_with_an_error_and_no_trailer(viewer: User, db: None, fmt: str) -> None:
    response = _many_then_broken(viewer).get(reverse(f"history-export-{fmt}"))
    assert response.status_code == 200 and response.streaming
    received: list[bytes] = []
    with pytest.raises(DatabaseError, match="UTF-8"):
        for chunk in response.streaming_content:
            received.append(chunk)
    body = b"".join(received)
    assert body.count(b"\n") >= exports.FETCH_ROWS  # rows went out before the failure
    assert b"eipdash export complete" not in body and b'"_export"' not in body


@sqlite_only
def test_the_command_fails_midway_without_a_trailer(viewer: User, db: None) -> None:
    _many_then_broken(viewer)
    out = io.StringIO()
    with pytest.raises(CommandError, match="the output is incomplete") as failed:
        call_command("export_history", stdout=out)
    assert failed.value.returncode == 1
    assert out.getvalue().count("\n") >= exports.FETCH_ROWS and "eipdash export complete" not in out.getvalue()


def test_the_fast_csv_lines_are_byte_for_byte_what_csv_writer_writes() -> None:
    values = ["plain", "", " ", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "crlf\r\n", ",", '"', "'=1", "é"]
    batch = [[values[(i + j) % len(values)] for j in range(len(CSV_COLUMNS))] for i in range(len(values))]
    batch.append(["x"] * len(CSV_COLUMNS))
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n").writerows(batch)
    assert exports._csv_text(batch, csv.writer(exports._Echo(), lineterminator="\r\n")) == expected.getvalue()


# --- The download's file name says what was filtered ------------------------------------------------


def _download_name(response) -> str:
    header = response["Content-Disposition"]
    match = re.fullmatch(r'attachment; filename="([A-Za-z0-9._-]+)"', header)
    assert match, header  # only safe characters, whatever the filter held
    return match.group(1)


@pytest.mark.parametrize(
    "params,stem",
    [
        ({"spec": "egress", "event": "released", "since": "2026-03-01T00:00", "until": "2026-03-02 00:00:00"},
         "eipdash-history-egress-released-2026-03-01-to-2026-03-02"),
        ({"since": "2026-03-01T03:10", "until": "2026-03-01 03:15:30"},
         "eipdash-history-2026-03-01T0310-to-2026-03-01T031530"),
        ({"spec": "egress", "since": "2026-03-01"}, "eipdash-history-egress-from-2026-03-01"),
        ({"event": "error", "until": "2026-03-02T00:00:00Z"}, "eipdash-history-error-to-2026-03-02"),
        ({"q": "by hand, 'ok'", "since": "2026-03-01T00:00:00+01:00"},
         "eipdash-history-search-by_hand_ok-from-2026-02-28T2300"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_history_export_file_name_says_what_was_filtered(
    viewer_client: Client, night: WebWorld, params: dict[str, str], stem: str, fmt: str
) -> None:
    response = viewer_client.get(reverse(f"history-export-{fmt}"), params)
    assert response.status_code == 200
    assert _download_name(response) == f"{stem}.{fmt}"


def test_history_export_file_name_without_dates_carries_the_export_date(viewer_client: Client, night: WebWorld) -> None:
    before = dt.datetime.now(dt.UTC).date()
    name = _download_name(viewer_client.get(reverse("history-export-csv"), {"spec": "egress"}))
    after = dt.datetime.now(dt.UTC).date()
    assert name in {f"eipdash-history-egress-{day:%Y-%m-%d}.csv" for day in (before, after)}
    assert _download_name(viewer_client.get(reverse("history-export-jsonl"))) in {
        f"eipdash-history-{day:%Y-%m-%d}.jsonl" for day in (before, after)
    }


def test_history_export_file_name_is_safe_for_a_hostile_spec_name(viewer_client: Client, db: None) -> None:
    hostile = 'eg"ress\r\nX-Evil: 1;/../x-' + "é" * 3 + "y" * 100
    Event.objects.create(timestamp=T0, kind=Event.Kind.ERROR, launch_spec=hostile, reason="old row")
    response = viewer_client.get(reverse("history-export-csv"), {"spec": hostile, "since": "2026-03-01"})
    assert response.status_code == 200 and not response.has_header("X-Evil")
    name = _download_name(response)
    # Runs of unsafe characters become one "_", and a filter value is 40 characters at most.
    assert name == "eipdash-history-eg_ress_X-Evil_1_.._x-_" + "y" * 17 + "-from-2026-03-01.csv"
