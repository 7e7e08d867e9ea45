"""The dashboard as an on-call tool, in a real browser (Debian's chromium driven by Playwright).

- health is true: a spec whose selector matches no EIP, or whose cluster has no kube context, is flagged
  as misconfigured on the overview and on its page, with what to do;
- live refresh never fights the reader: focus and a text selection inside a live table survive the polls,
  the data still arrives once the reader lets go, and the History page announces new events instead of
  inserting rows;
- the reassign confirmation is a real modal: focus moves in, Tab stays inside, Escape closes it;
- the EIP inventory lists IPv4 addresses in numeric order and fits a 390 px screen without scrolling sideways.

The record is written as rows (what the workers would write): these tests are about the browser side.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from pools.models import Cluster, ElasticIP, Event, LaunchSpec, Node
from tests.e2e.test_browser import CHROMIUM, SHOTS, _login, demo_world
from tests.fixtures.web import assign, make_eip, make_node, record

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _until(page, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait for a condition with a deadline; page.wait_for_timeout lets Playwright deliver its events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}")


def _polls_seen(page, url_part: str) -> list[int]:
    """A list that grows by one each time the page sends a live poll of url_part. Requests, not responses: a
    held poll sends none, while the response to a poll sent before the hold may still arrive (late, on a
    loaded machine)."""
    seen: list[int] = []
    page.on("request", lambda request: seen.append(1) if url_part in request.url and
            request.headers.get("hx-request") else None)
    return seen


# --- Health must be true ---------------------------------------------------------------------------


def test_misconfigured_specs_are_flagged_with_what_to_do(page, live_server, operator, transactional_db,
                                                         fast_refresh) -> None:
    demo_world()
    prod = Cluster.objects.get(name="prod-eu")
    LaunchSpec.objects.create(name="typo-pool", cluster=prod, labels={"eks.amazonaws.com/nodegroup": "typo"},
                              tag_key="eipdash/pool", tag_value="no-such-pool", last_successful_pass_at=timezone.now())
    lost = Cluster.objects.create(name="staging-us", region="us-east-1")  # no kube context
    LaunchSpec.objects.create(name="staging-egress", cluster=lost, labels={"role": "egress"}, tag_key="eipdash/pool",
                              tag_value="staging", last_successful_pass_at=timezone.now())
    make_eip(200, region="us-east-1", tags={"eipdash/pool": "staging"})
    _login(page, live_server, operator)

    typo = page.locator("article.tile[data-spec='typo-pool']")
    assert typo.get_attribute("data-status") == "misconfigured"
    assert "misconfigured" in typo.inner_text()
    staging = page.locator("article.tile[data-spec='staging-egress']")
    assert staging.get_attribute("data-status") == "misconfigured"
    # The specs of the demo night are healthy (or exhausted): never painted misconfigured.
    assert page.locator("article.tile[data-spec='egress-nat']").get_attribute("data-status") == "ok"
    assert page.locator("article.tile[data-spec='partner-sftp']").get_attribute("data-status") == "exhausted"

    problems = page.locator("#problems")
    empty = problems.locator("[data-spec='typo-pool'][data-problem='empty_pool']")
    assert "No EIP in eu-west-1 matches the selector eipdash/pool=no-such-pool" in empty.inner_text()
    assert "Tag the pool's Elastic IPs" in empty.inner_text()
    context = problems.locator("[data-spec='staging-egress'][data-problem='no_kube_context']")
    assert "Cluster staging-us has no kube context" in context.inner_text()
    assert problems.locator("[data-spec='egress-nat']").count() == 0
    page.screenshot(path=str(SHOTS / "overview-misconfigured.png"), full_page=True)

    # The spec page says it too, instead of "nothing to do", and the user-data snippet warns.
    page.goto(f"{live_server.url}/launch-specs/typo-pool/")
    assert page.locator("#spec-problems [data-problem='empty_pool']").count() == 1
    assert page.locator("#plan-blocked").is_visible()
    assert "Nothing to do" not in page.locator("#spec-live").inner_text()
    assert page.locator("#user-data-empty").is_visible()
    # The list of specs flags it as well.
    page.goto(f"{live_server.url}/launch-specs/")
    assert page.locator("#spec-table [data-problem='empty_pool']").count() == 1

    # Worker down, reading AWS failing: both on the overview. A disabled spec still holding EIPs drains on
    # purpose: its tile says so, and it is no problem.
    LaunchSpec.objects.filter(name="egress-nat").update(enabled=False)
    LaunchSpec.objects.filter(name="ingress-edge").update(active_alerts=["read-failed"])
    LaunchSpec.objects.filter(name="partner-sftp").update(
        last_successful_pass_at=timezone.now() - dt.timedelta(hours=4))
    page.goto(f"{live_server.url}/")
    for spec, code in (("ingress-edge", "read_failing"), ("partner-sftp", "stale_pass")):
        assert page.locator(f"#problems [data-spec='{spec}'][data-problem='{code}']").count() == 1, (spec, code)
    assert page.locator("article.tile[data-spec='egress-nat']").get_attribute("data-status") == "draining"
    assert page.locator("#problems [data-spec='egress-nat']").count() == 0
    # The alert key is a sentence, never the raw key.
    assert "reading AWS or Kubernetes fails" in page.locator("#alerts").inner_text()
    assert "read-failed" not in page.locator("#alerts").inner_text()


def test_alerts_are_grouped_by_spec_and_kind(page, live_server, operator, transactional_db, fast_refresh) -> None:
    demo: Any = demo_world()
    partner = demo["specs"]["partner-sftp"]
    for minutes in range(1, 21):
        record(Event.Kind.POOL_EXHAUSTED, spec=partner, at=timezone.now() - dt.timedelta(minutes=minutes),
               reason=f"2 nodes need an EIP and the pool has 0 free ({minutes})")
    _login(page, live_server, operator)
    rows = page.locator("#alerts details.alert-row[data-spec='partner-sftp'][data-kind='pool_exhausted']")
    assert rows.count() == 1
    # The demo's one event plus twenty: one row, with the count and the latest reason.
    assert rows.locator("[data-field='count']").inner_text() == "21"
    assert "pool exhausted" in rows.inner_text() and "pool_exhausted" not in rows.inner_text()
    assert "(1)" in rows.inner_text()


# --- Live refresh that never fights the reader ----------------------------------------------------


def test_focus_and_selection_survive_the_live_refresh(page, live_server, operator, transactional_db,
                                                      fast_refresh) -> None:
    demo: Any = demo_world()
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/")
    polls = _polls_seen(page, "/eips/")
    _until(page, lambda: len(polls) >= 2, "two polls of the inventory")

    # Focus on a copy button inside the live table: polls are held, the focus stays where it is.
    first = demo["eips"]["egress-nat"][0]
    button = page.locator(f"#eip-{first.allocation_id} button.copy").first
    button.focus()
    _until(page, lambda: "on hold: focus is inside" in page.locator("#eip-table .refresh").inner_text(), "a held poll")
    free_eip = demo["eips"]["egress-nat"][5]
    node = make_node("ip-10-0-77-7.eu-west-1.compute.internal", spec=demo["specs"]["egress-nat"], index=777)
    assign(free_eip, node)
    _until(page, lambda: page.evaluate("document.querySelectorAll('#eip-table .held-note').length") == 1, "held note")
    assert page.evaluate("document.activeElement.getAttribute('data-copy')") == first.public_ip
    assert page.evaluate("document.activeElement.closest('#eip-table') !== null")

    # Focus leaves: the next poll swaps the new data in by morphing.
    page.evaluate("document.activeElement.blur()")
    row = page.locator(f"#eip-{free_eip.allocation_id} [data-field=node]")
    _until(page, lambda: node.name in row.inner_text(), "the new assignment in the table")

    # A text selection inside the table (an IP being copied) survives too.
    cell = page.locator(f"#eip-{first.allocation_id} a.mono strong")
    cell.select_text()
    assert page.evaluate("window.getSelection().toString()") == first.public_ip
    _until(page, lambda: "on hold: text is selected" in page.locator("#eip-table .refresh").inner_text(), "a held poll")
    count = len(polls)  # from the first held poll on, not one request
    held = int(page.locator("#eip-table").get_attribute("data-held-polls") or 0)
    _until(page, lambda: int(page.locator("#eip-table").get_attribute("data-held-polls") or 0) >= held + 2,
           "two more held polls")
    assert page.evaluate("window.getSelection().toString()") == first.public_ip
    assert len(polls) == count  # held polls send no request at all

    # The pause control stops the refresh for the whole page, and resumes it.
    page.evaluate("window.getSelection().removeAllRanges()")
    page.click("#live-toggle")
    assert page.locator("#live-toggle").get_attribute("aria-pressed") == "true"
    _until(page, lambda: "live refresh paused" in page.locator("#eip-table .refresh").inner_text(), "paused note")
    count = len(polls)
    second_node = make_node("ip-10-0-78-8.eu-west-1.compute.internal", spec=demo["specs"]["egress-nat"], index=778)
    other = demo["eips"]["egress-nat"][4]
    assign(other, second_node)
    held = int(page.locator("#eip-table").get_attribute("data-held-polls") or 0)
    _until(page, lambda: int(page.locator("#eip-table").get_attribute("data-held-polls") or 0) >= held + 2,
           "two held polls")
    assert len(polls) == count
    page.click("#live-toggle")
    assert page.locator("#live-toggle").inner_text() == "Pause live refresh"
    _until(page, lambda: second_node.name in page.locator(f"#eip-{other.allocation_id} [data-field=node]").inner_text(),
           "the update after resuming")


def test_history_announces_new_events_instead_of_inserting_rows(page, live_server, operator, transactional_db,
                                                                 fast_refresh) -> None:
    demo: Any = demo_world()
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/history/")
    top = page.locator("#history-table tbody tr").first.get_attribute("id")
    spec = demo["specs"]["egress-nat"]
    record(Event.Kind.ERROR, spec=spec, reason="throttled by AWS")
    record(Event.Kind.ERROR, spec=spec, reason="throttled by AWS again")
    link = page.locator("#history-new-link")
    link.wait_for()
    assert link.inner_text() == "2 new events · show"
    # The rows did not move under the reader.
    assert page.locator("#history-table tbody tr").first.get_attribute("id") == top
    link.click()
    page.wait_for_load_state()
    assert "throttled by AWS again" in page.locator("#history-table tbody tr").first.inner_text()


def test_history_bad_filter_shows_the_error_and_no_rows(page, live_server, operator, transactional_db) -> None:
    demo_world()
    _login(page, live_server, operator)
    response = page.goto(f"{live_server.url}/history/?since=yesterday&event=error")
    assert response.status == 400
    assert "since" in page.locator("#filter-errors").inner_text()
    assert page.locator("#history-table tbody tr:not(:has(.empty))").count() == 0
    assert page.locator("#export-csv").count() == 0 and page.locator("#export-refused").is_visible()
    export = page.request.get(f"{live_server.url}/history/export.csv?since=yesterday")
    assert export.status == 400 and "bad filter" in export.text()


# --- The reassign dialog is a real modal ----------------------------------------------------------


def test_reassign_dialog_is_a_modal(page, live_server, operator, transactional_db) -> None:
    demo: Any = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
    page.click("text=Reassign…")
    dialog = page.locator("dialog#reassign-dialog")
    dialog.wait_for()
    assert page.evaluate("document.querySelector('#reassign-dialog').matches(':modal')")
    assert page.evaluate("document.querySelector('#reassign-dialog').contains(document.activeElement)")
    # Tab and Shift+Tab never leave the dialog.
    for key in ["Tab"] * 5 + ["Shift+Tab"] * 5:
        page.keyboard.press(key)
        assert page.evaluate("document.querySelector('#reassign-dialog').contains(document.activeElement)"), key
    # The page behind is inert: what lies under the nav is the dialog's backdrop, not the nav.
    assert page.evaluate("document.elementFromPoint(5, 5) === document.querySelector('#reassign-dialog')")
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    # Focus is back on the page, and nothing was requested.
    assert page.evaluate("document.activeElement.tagName") in {"BUTTON", "BODY", "SELECT"}
    from pools.models import ReassignRequest

    assert not ReassignRequest.objects.exists()


# --- Inventory ------------------------------------------------------------------------------------


def test_inventory_is_in_numeric_ip_order(page, live_server, operator, transactional_db, fast_refresh) -> None:
    demo_world()  # 203.0.113.1 … 203.0.113.12 and 203.0.113.99: text order would put .10 before .2
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/")
    shown = page.locator("#eip-table tbody tr a.mono strong").all_inner_texts()
    stored = list(ElasticIP.objects.values_list("public_ip", flat=True))
    numeric = sorted(stored, key=lambda ip: tuple(int(part) for part in ip.split(".")))
    assert shown == numeric and shown != sorted(stored)
    page.goto(f"{live_server.url}/eips/?sort=-ip")
    assert page.locator("#eip-table tbody tr a.mono strong").all_inner_texts() == numeric[::-1]


@pytest.mark.parametrize("path", ["/eips/", "/nodes/", "/", "/history/", "/launch-specs/", "EIP", "SPEC"])
def test_mobile_pages_do_not_overflow(browser, live_server, operator, transactional_db, path: str) -> None:
    demo: Any = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    path = {"EIP": f"/eips/{eip.allocation_id}/", "SPEC": "/launch-specs/egress-nat/"}.get(path, path)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        _login(page, live_server, operator)
        page.goto(live_server.url + path)
        page.wait_for_load_state()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
        # The nav fits: every link is on screen.
        for box in page.locator(".mainnav a").evaluate_all("links => links.map(a => a.getBoundingClientRect().right)"):
            assert box <= 390, (path, box)
        if path == "/eips/":
            # The key columns stay: IP, state, node.
            header = page.locator("#eip-table thead th:visible").all_inner_texts()
            assert [h.strip().rstrip("▲▼ ").upper() for h in header] == ["PUBLIC IP", "STATE", "NODE"]
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "mobile-eips.png"), full_page=True)
        if path.startswith("/eips/eipalloc"):
            page.select_option("select[name=node]", index=0)
            page.click("text=Reassign…")
            page.locator("dialog#reassign-dialog").wait_for()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            right = page.locator("dialog#reassign-dialog").evaluate("d => d.getBoundingClientRect().right")
            assert right <= 390
    finally:
        context.close()


def test_error_pages_are_in_the_layout(page, live_server, viewer, transactional_db) -> None:
    demo_world()
    _login(page, live_server, viewer)
    response = page.goto(f"{live_server.url}/launch-specs/nosuch/")
    assert response.status == 404
    assert page.locator("#error-page").get_attribute("data-status") == "404"
    assert page.locator(".mainnav").is_visible()
    response = page.goto(f"{live_server.url}/launch-specs/new/")  # a viewer may not create one
    assert response.status == 403
    assert page.locator("#error-page").get_attribute("data-status") == "403"


def test_ended_nodes_are_hidden_and_counts_agree(page, live_server, operator, transactional_db, fast_refresh) -> None:
    demo: Any = demo_world()
    spec = demo["specs"]["egress-nat"]
    make_node("never-served", spec=spec, index=4242, state=Node.State.RELEASED)
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/launch-specs/egress-nat/")
    tile_nodes = int(page.locator("#spec-live .figures div:has(dt:text-is('Nodes')) dd").inner_text())
    rows = page.locator("#spec-live section:has(h2:has-text('Nodes')) tbody tr").count()
    assert tile_nodes == rows
    page.click("#toggle-ended")
    page.wait_for_url("**ended=1**")
    ended = page.locator("#spec-live tr:has-text('never-served')")
    # A node that never had an EIP is not "released".
    assert ended.get_attribute("data-state") == "ended"


def test_eip_detail_title_is_as_large_as_every_other_title(page, live_server, operator, transactional_db) -> None:
    demo: Any = demo_world()
    _login(page, live_server, operator)
    overview = page.evaluate("parseFloat(getComputedStyle(document.querySelector('h1')).fontSize)")
    page.goto(f"{live_server.url}/eips/{demo['eips']['egress-nat'][0].allocation_id}/")
    detail = page.evaluate("parseFloat(getComputedStyle(document.querySelector('h1')).fontSize)")
    assert detail == overview and detail > 20


def test_no_polling_in_a_hidden_tab(page, live_server, operator, transactional_db, fast_refresh) -> None:
    demo: Any = demo_world()
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/nodes/")
    polls = _polls_seen(page, "/nodes/")
    _until(page, lambda: len(polls) >= 1, "a poll of the nodes table")
    # The tab goes to the background (what the browser reports through the Page Visibility API).
    page.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true})")
    table = page.locator("#node-table")
    held = int(table.get_attribute("data-held-polls") or 0)
    _until(page, lambda: int(table.get_attribute("data-held-polls") or 0) >= held + 2, "two held polls")
    count = len(polls)
    _until(page, lambda: int(table.get_attribute("data-held-polls") or 0) >= held + 3, "a third held poll")
    assert len(polls) == count
    assert "the tab is hidden" in table.locator(".refresh").inner_text()
    # Back in front: polling resumes, and new data arrives.
    make_node("ip-10-0-66-6.eu-west-1.compute.internal", spec=demo["specs"]["egress-nat"], index=666)
    page.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, get: () => false})")
    _until(page, lambda: "ip-10-0-66-6" in table.inner_text(), "the new node after the tab is shown again")
