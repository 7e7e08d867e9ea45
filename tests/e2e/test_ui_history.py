"""The history rows, the time filters, the spec page's Pool EIPs card and the focus rings, in chromium.

- on a phone (390 px) a history row expands to show the fields its table hides (launch spec, actor, reason),
  by mouse or keyboard, and stays expanded across the live refresh (History, and the spec page's recent
  history, which is morphed every few seconds);
- node names and instance ids never break mid-token;
- the time filters show ISO 24-hour UTC text, never the browser's locale (12-hour AM/PM in en-US);
- the Pool EIPs card shows its whole Allocation column at 1440 px;
- the focus rings reach 3:1 against what they are drawn on (WCAG 2.2 non-text contrast), read from eipdash.css.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from pools.models import Event
from tests.e2e.test_browser import CHROMIUM, SHOTS, _login, demo_world
from tests.fixtures.polling import eventually

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CSS = Path(__file__).resolve().parents[2] / "static" / "pools" / "eipdash.css"
# The browser tests' marks; the contrast test at the end reads the stylesheet only, and runs without chromium.
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="Debian chromium is not installed at /usr/bin/chromium")

# How many lines a text node of the page is laid out on (one client rect per line box).
LINES_OF = """([root, text]) => {
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.indexOf(text);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + text.length);
    return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
  }
  return -1;
}"""


@pytest.fixture
def phone(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    context.set_default_timeout(5_000)
    yield context.new_page()
    context.close()


def _moved_by_hand(spec_name: str) -> Event:
    """An event whose hidden fields say something: an operator's move, with a long reason."""
    return Event.objects.create(
        timestamp=timezone.now(), kind=Event.Kind.REASSIGNED, launch_spec=spec_name, cluster="prod-eu",
        region="eu-west-1", node="ip-10-0-1-2.ec2.internal", instance_id="i-0123456789abcdef0",
        public_ip="203.0.113.1", allocation_id="eipalloc-00000000000000001", actor="olivia-operator",
        reason="moved by hand from ip-10-0-13-0.eu-west-1.compute.internal: the old node is being drained",
    )


def _assert_expands(page: Any, event: Event) -> None:
    row = page.locator(f"#event-{event.pk}")
    for hidden in ("olivia-operator", "the old node is being drained"):
        assert not row.get_by_text(hidden).first.is_visible(), hidden
    toggle = row.locator("summary")
    toggle.click()
    fields = row.locator(".event-fields")
    fields.wait_for(state="visible")
    text = fields.inner_text()
    for label, value in (("Launch spec", event.launch_spec), ("Actor", "olivia-operator"), ("Reason", event.reason)):
        assert label.upper() in text and value in text, (label, text)  # the labels are in small capitals


@pytest.mark.browser
@needs_chromium
def test_event_rows_expand_at_390_px_and_stay_expanded_on_history(
    phone: Any, live_server: Any, operator: Any, transactional_db: None, fast_refresh: None
) -> None:
    demo_world()
    moved = _moved_by_hand("egress-nat")
    _login(phone, live_server, operator)
    phone.goto(f"{live_server.url}/history/")
    _assert_expands(phone, moved)
    SHOTS.mkdir(parents=True, exist_ok=True)
    phone.screenshot(path=str(SHOTS / "ui-390-history-expanded.png"))
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    # Node ids wrap at no point inside a token: each stays on one line, and fits the screen.
    for text in ("ip-10-0-1-2.ec2.internal", "i-0123456789abcdef0"):
        assert phone.evaluate(LINES_OF, [f"#event-{moved.pk}", text]) == 1, text
    node_cell = phone.locator(f"#event-{moved.pk} td[data-field=node]")
    assert node_cell.evaluate("cell => cell.getBoundingClientRect().right") <= 390
    # Keyboard: the toggle is in the tab order; Enter closes and opens it.
    toggle = phone.locator(f"#event-{moved.pk} summary")
    assert toggle.bounding_box()["height"] >= 24  # WCAG 2.2 target size (minimum)
    toggle.focus()
    phone.keyboard.press("Enter")
    phone.locator(f"#event-{moved.pk} .event-fields").wait_for(state="hidden")
    phone.keyboard.press("Enter")
    phone.locator(f"#event-{moved.pk} .event-fields").wait_for(state="visible")
    # A live poll (the count of newer events) leaves the expanded row as it is.
    phone.evaluate("document.activeElement.blur()")
    Event.objects.create(timestamp=timezone.now(), kind=Event.Kind.ERROR, launch_spec="egress-nat", reason="late")
    phone.locator("#history-new-link").wait_for()
    assert phone.locator(f"#event-{moved.pk} .event-fields").is_visible()


@pytest.mark.browser
@needs_chromium
def test_event_rows_stay_expanded_across_the_spec_pages_morph(
    phone: Any, live_server: Any, operator: Any, transactional_db: None, fast_refresh: None
) -> None:
    demo_world()
    moved = _moved_by_hand("egress-nat")
    _login(phone, live_server, operator)
    phone.goto(f"{live_server.url}/launch-specs/egress-nat/")
    _assert_expands(phone, moved)
    phone.evaluate("document.activeElement.blur()")  # focus inside a live part holds its refresh
    newer = Event.objects.create(timestamp=timezone.now(), kind=Event.Kind.ERROR, launch_spec="egress-nat",
                                 reason="throttled by AWS")
    phone.locator(f"#spec-live #event-{newer.pk}").wait_for()  # the morph ran: the new row is in
    assert phone.locator(f"#event-{moved.pk} details").get_attribute("open") is not None
    assert phone.locator(f"#event-{moved.pk} .event-fields").is_visible()
    # The new row arrives closed, and the next morphs leave both as they are.
    assert phone.locator(f"#event-{newer.pk} details").get_attribute("open") is None
    updated = phone.locator("#spec-live .refresh").inner_text()
    eventually(lambda: phone.locator("#spec-live .refresh").inner_text() != updated, timeout=10,
               what="another morph of the spec page")
    assert phone.locator(f"#event-{moved.pk} .event-fields").is_visible()


@pytest.mark.browser
@needs_chromium
def test_history_time_filters_show_24_hour_iso_utc(
    page: Any, live_server: Any, operator: Any, transactional_db: None
) -> None:
    demo_world()
    _login(page, live_server, operator)
    # On a wide screen every field has its column: no "Details" disclosure in the rows.
    page.goto(f"{live_server.url}/history/")
    assert page.locator("#history-table tbody tr").first.locator("td[data-field=reason]").is_visible()
    assert not page.locator("#history-table tbody tr summary").first.is_visible()
    page.goto(f"{live_server.url}/history/?since=2026-12-07T14:06:15")
    since = page.get_by_label("Since (UTC, 24 h)")
    # What the reader sees is the text itself (a datetime-local would show "12/07/2026, 02:06:15 PM").
    assert since.input_value() == "2026-12-07T14:06:15"
    until = page.get_by_label("Until (UTC, 24 h)")
    until.click()
    page.keyboard.type("2026-12-07 16:30")
    assert until.input_value() == "2026-12-07 16:30"
    assert until.evaluate("input => input.validity.valid")
    until.fill("12/07/2026 04:30 PM")  # a 12-hour time is refused by the browser's own check
    assert until.evaluate("input => input.validity.patternMismatch")
    until.fill("2026-12-07 16:30:00")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"until=2026-12-07\+16%3A30%3A00"))
    assert page.get_by_label("Until (UTC, 24 h)").input_value() == "2026-12-07 16:30:00"
    assert page.get_by_label("Until (UTC, 24 h)").get_attribute("placeholder") == "YYYY-MM-DD HH:MM[:SS]"


@pytest.mark.browser
@needs_chromium
def test_pool_eips_card_shows_the_whole_allocation_column_at_1440_px(
    browser: Any, live_server: Any, operator: Any, transactional_db: None, settings: Any
) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 3600
    demo: Any = demo_world()
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    try:
        page = context.new_page()
        _login(page, live_server, operator)
        page.goto(f"{live_server.url}/launch-specs/egress-nat/")
        card = page.locator("#pool-eips")
        SHOTS.mkdir(parents=True, exist_ok=True)
        card.screenshot(path=str(SHOTS / "ui-1440-pool-eips.png"))
        box = card.bounding_box()
        cells = card.locator("td[data-field=allocation]")
        assert cells.count() == len(demo["eips"]["egress-nat"])
        for index in range(cells.count()):
            cell = cells.nth(index)
            allocation = re.search(r"\beipalloc-[0-9a-f]{17}\b", cell.inner_text())
            assert allocation and page.evaluate(LINES_OF, ["#pool-eips", allocation[0]]) == 1, "an id broken"
            cell_box = cell.bounding_box()
            assert cell.evaluate("cell => cell.scrollWidth <= cell.clientWidth")
            assert cell_box["x"] + cell_box["width"] <= box["x"] + box["width"], "the cell runs past the card"
        # Nothing of the card is hidden behind a sideways scroll.
        assert card.evaluate("card => card.scrollWidth <= card.clientWidth")
    finally:
        context.close()


# --- Focus rings: 3:1 against what they are drawn on (WCAG 2.2, 1.4.11 non-text contrast) ---------------


def _luminance(colour: str) -> float:
    value = colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(one: str, other: str) -> float:
    high, low = sorted((_luminance(one), _luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _rules(css: str) -> list[tuple[str, dict[str, str]]]:
    """(selector, declarations) of every rule, media queries flattened: enough for this hand-written sheet."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"@media[^{]*\{", "", css)
    rules = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        declarations = dict(
            (name.strip(), value.strip()) for name, _, value in
            (part.partition(":") for part in body.split(";") if ":" in part)
        )
        rules.append((" ".join(selector.split()), declarations))
    return rules


def _resolve(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"var\((--[\w-]+)\)", lambda m: variables[m.group(1)], value)


def _declared(rules: list[tuple[str, dict[str, str]]], selector: str, prop: str) -> str:
    values = [body[prop] for sel, body in rules if selector in [s.strip() for s in sel.split(",")] and prop in body]
    assert values, f"no {prop} for {selector}"
    return values[-1]


def _outline_colour(rules: list[tuple[str, dict[str, str]]], selector: str, variables: dict[str, str]) -> str:
    outline = _resolve(_declared(rules, selector, "outline"), variables)
    colour = re.search(r"#[0-9a-fA-F]{3,6}\b", outline)
    assert colour, outline
    return colour.group(0)


def test_focus_rings_reach_3_to_1_against_their_backgrounds_in_eipdash_css() -> None:
    rules = _rules(CSS.read_text())
    variables = {name: value for selector, body in rules if selector == ":root"
                 for name, value in body.items() if name.startswith("--")}
    light = [
        ("page", _resolve(variables["--bg"], variables)),
        ("card", _resolve(variables["--card"], variables)),
        ("input", _resolve(_declared(rules, "input", "background"), variables)),
        ("table head", _resolve(_declared(rules, ".table th", "background"), variables)),
    ]
    dark = [
        ("top bar", _resolve(_declared(rules, ".topbar", "background"), variables)),
        ("current nav link", _resolve(_declared(rules, '.mainnav a[aria-current="page"]', "background"), variables)),
        ("hovered nav link", _resolve(_declared(rules, ".mainnav a:hover", "background"), variables)),
    ]
    rings = {
        "links and buttons": (_outline_colour(rules, "a:focus-visible", variables), light),
        "summaries": (_outline_colour(rules, "summary:focus-visible", variables), light),
        "inputs": (_outline_colour(rules, "input:focus", variables), light),
        "the skip link over the top bar": (_outline_colour(rules, "a:focus-visible", variables), dark[:1]),
        "the top bar": (_outline_colour(rules, ".topbar a:focus-visible", variables), dark),
    }
    for what, (ring, backgrounds) in rings.items():
        for where, background in backgrounds:
            ratio = _contrast(ring, background)
            assert ratio >= 3, (what, ring, where, background, round(ratio, 2))
