"""HistoryFilterForm: its time fields are plain text in ISO 24-hour UTC (a browser's datetime-local would show
the reader's locale, 12-hour in en-US), and they read what the exports and the API read."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from pools.forms import HistoryFilterForm, LaunchSpecImportForm
from tests.fixtures.web import WebWorld

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-12-07T02:06", dt.datetime(2026, 12, 7, 2, 6, tzinfo=dt.UTC)),
        ("2026-12-07 02:06", dt.datetime(2026, 12, 7, 2, 6, tzinfo=dt.UTC)),
        ("2026-12-07 02:06:15", dt.datetime(2026, 12, 7, 2, 6, 15, tzinfo=dt.UTC)),
        ("2026-12-07T02:06:15Z", dt.datetime(2026, 12, 7, 2, 6, 15, tzinfo=dt.UTC)),
        ("2026-12-07T02:06:15+01:00", dt.datetime(2026, 12, 7, 1, 6, 15, tzinfo=dt.UTC)),
        ("2026-12-07", dt.datetime(2026, 12, 7, tzinfo=dt.UTC)),
    ],
)
def test_history_filter_form_reads_iso_with_t_or_space(text: str, expected: dt.datetime) -> None:
    form = HistoryFilterForm({"since": text, "until": text})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["since"] == expected == form.cleaned_data["until"]


def _pattern(form: HistoryFilterForm, field: str) -> re.Pattern[str]:
    html = str(form[field])
    match = re.search(r'pattern="([^"]+)"', html)
    assert match, html
    return re.compile(match.group(1).replace("&quot;", '"'))


@pytest.mark.parametrize("field", ["since", "until"])
def test_history_filter_form_time_inputs_are_24_hour_iso_text(field: str) -> None:
    form = HistoryFilterForm()
    html = str(form[field])
    assert 'type="text"' in html and "datetime-local" not in html
    assert 'placeholder="YYYY-MM-DD HH:MM[:SS]"' in html
    pattern = _pattern(form, field)
    # The browser's own check (the pattern) lets through what the server reads, and stops a 12-hour time.
    for text in ("2026-12-07T02:06", "2026-12-07 02:06:15", "2026-12-07T02:06:15Z", "2026-12-07 14:06:15.5+01:00",
                 "2026-12-07"):
        assert pattern.fullmatch(text), text
        assert HistoryFilterForm({field: text}).is_valid()
    for text in ("12/07/2026 02:06 PM", "2026-12-07 2:06 PM", "yesterday"):
        assert not pattern.fullmatch(text), text


def test_history_filter_form_shows_a_time_as_24_hour_iso() -> None:
    form = HistoryFilterForm(initial={"since": dt.datetime(2026, 12, 7, 14, 6, 15, tzinfo=dt.UTC)})
    assert 'value="2026-12-07 14:06:15"' in str(form["since"])


def test_history_page_labels_its_time_inputs_utc_24_hour(viewer_client: Client, web_world: WebWorld) -> None:
    html = viewer_client.get(reverse("history"), {"since": "2026-12-07 14:06:15"}).content.decode()
    assert 'value="2026-12-07 14:06:15"' in html
    assert "Since (UTC, 24 h)" in html and "Until (UTC, 24 h)" in html


def test_launch_spec_import_form_reads_the_import_pages_example(operator_client: Client) -> None:
    """The example on the import page imports as it stands, with the tag key the README and the sandbox use."""
    page = operator_client.get(reverse("launch-spec-import")).content.decode()
    example = html.unescape(re.search(r'<summary>Example</summary><pre class="code">(.*?)</pre>', page, re.S)[1])
    form = LaunchSpecImportForm({"document": example})
    assert form.is_valid(), form.errors
    assert form.spec_input is not None and form.spec_input.tag_key == "eipdash.io/pool"
    readme = (ROOT / "README.md").read_text()
    assert readme.count("eipdash.io/pool") > 0 and "eipdash/pool" not in readme
