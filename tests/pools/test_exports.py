"""History exports: the columns and their order, formula neutralisation, exactly the filtered set, the
same code behind the downloads and `manage.py export_history`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from pools.exports import CSV_COLUMNS, iso_utc, neutralise
from pools.models import Event
from pools.selectors import EventFilters, event_list
from tests.fixtures.web import WebWorld, record

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


def _csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def _stream(response) -> bytes:
    assert response.streaming, "exports must stream"
    return b"".join(response.streaming_content)


def test_neutralise() -> None:
    assert [neutralise(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "ok", "", "a=b")] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "ok", "", "a=b",
    ]  # fmt: skip


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
    lines = [json.loads(line) for line in _stream(response).decode().splitlines()]
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
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["event"], line["launch_spec"], line["reason"]) for line in lines] == [
        ("released", "egress", "-drained")
    ]


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_command_rejects_bad_dates(night: WebWorld, option: str) -> None:
    with pytest.raises(CommandError, match=f"{option} 'last tuesday' is not an ISO 8601"):
        call_command("export_history", option, "last tuesday", stdout=io.StringIO())


def test_export_streams_many_rows_in_chunks(night: WebWorld) -> None:
    Event.objects.bulk_create(
        Event(timestamp=T0 - dt.timedelta(seconds=i), kind=Event.Kind.ASSIGNED, launch_spec="bulk") for i in range(5000)
    )
    from pools.exports import csv_lines

    lines = csv_lines(event_list(filters=EventFilters(spec="bulk")))
    assert next(lines).startswith("timestamp,event")
    assert sum(1 for _ in lines) == 5000
