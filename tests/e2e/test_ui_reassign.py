"""The manual reassign in chromium, made hard to fumble (issue 20, item 4):

- the dialog opens on a safe first stop (Cancel, or the choice of a target): Reassign…, Enter, Enter moves
  nothing;
- once sent, Move is gone; a worker's refusal says why, keeps Move hidden and offers the targets as they are
  now (the worker's reading, written before it refused, no longer offers a node it found draining);
- the action sits at the top of the EIP page, on a phone's first screen, and in each row of the inventory.

The worker is played here as in tests/e2e/test_browser.py: the page records the request, the test writes the
outcome a worker would write.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import expect

from pools.models import Assignment, Node, ReassignRequest
from pools.services import reassign_request_finish
from tests.e2e.test_browser import CHROMIUM, _login, demo_world
from tests.fixtures.polling import eventually
from tests.fixtures.web import make_node

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_eip_reassign_dialog_opens_on_cancel_so_enter_enter_moves_nothing(page, live_server, operator,
                                                                          transactional_db) -> None:
    demo: Any = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
    page.select_option("select[name=node]", demo["waiting"].name)
    opener = page.get_by_role("button", name="Reassign…")
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("dialog#reassign-dialog")
    expect(dialog).to_be_visible()
    # Focus starts on Cancel, not on Move: the second Enter closes the dialog.
    expect(page.locator("#reassign-cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_have_count(0)
    expect(opener).to_be_focused()
    assert not ReassignRequest.objects.exists()


def test_eip_reassign_refusal_hides_move_and_offers_fresh_targets(page, live_server, operator,
                                                                  transactional_db) -> None:
    demo: Any = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    holder, target = demo["nodes"]["egress-nat"][1], demo["waiting"]
    spare = make_node("ip-10-0-9-2.eu-west-1.compute.internal", spec=demo["specs"]["egress-nat"], index=902,
                      startup_tainted=True)
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
    page.select_option("select[name=node]", target.name)
    page.get_by_role("button", name="Reassign…").click()
    page.click("#reassign-confirm")
    expect(page.locator("#reassign-pending")).to_be_visible()
    # Sent: Move is gone, so it cannot be sent twice while the worker works.
    expect(page.locator("#reassign-confirm")).to_have_count(0)

    # The worker's fresh reading finds the target cordoned (it writes the row), and refuses.
    request = eventually(lambda: ReassignRequest.objects.filter(state=ReassignRequest.State.PENDING).first(),
                         timeout=10, what="the page records a reassign request")
    Node.objects.filter(pk=target.pk).update(draining=True, drain_reason="cordoned", state=Node.State.DRAINING)
    reassign_request_finish(request_id=request.pk, state="refused", message=f"{target.name} is draining.")
    expect(page.locator("#reassign-error")).to_have_text(f"Refused, nothing was changed: {target.name} is draining.")
    expect(page.locator("#reassign-confirm")).to_have_count(0)
    offered = page.locator("#reassign-node option").evaluate_all("options => options.map(o => o.value)")
    assert offered == [spare.name]
    expect(page.locator("#reassign-node")).to_be_focused()
    # Another node can be chosen at once: the next step asks again, focus on Cancel.
    page.click("#reassign-review")
    expect(page.locator("#reassign-title")).to_have_text(f"Move {eip.public_ip} to {spare.name}?")
    expect(page.locator("#reassign-cancel")).to_be_focused()
    assert Assignment.objects.get(eip=eip, closed_at__isnull=True).node_id == holder.pk


def test_eip_list_row_reassign_opens_the_dialog_on_the_choice_of_targets(page, live_server, operator,
                                                                         transactional_db, fast_refresh) -> None:
    demo: Any = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/?spec=egress-nat")
    row_action = page.get_by_role("link", name=f"Reassign {eip.public_ip}…")
    row_action.click()
    dialog = page.locator("dialog#reassign-dialog")
    expect(dialog).to_be_visible()
    assert dialog.evaluate("d => d.matches(':modal')")
    expect(page.locator("#reassign-node")).to_be_focused()
    assert page.locator("#reassign-confirm").count() == 0
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert not ReassignRequest.objects.exists()
    # Focus is back on the row's action, and the table keeps refreshing around it.
    expect(row_action).to_be_focused()
    # The table polls every second; on a loaded 2-core machine (four test workers and their browsers) the next
    # answer can take seconds: wait for it as long as the other browser waits do, never a fixed time. Two
    # answers: the first one's morph must not take the action's done mark away and hold the ones after it.
    for _ in range(2):
        with page.expect_response(lambda r: "/eips/" in r.url and bool(r.request.headers.get("hx-request")),
                                  timeout=30_000):
            pass
    expect(page.locator("#eip-table .held-note")).to_have_count(0)
    expect(row_action).to_be_focused()


def test_eip_detail_reassign_is_on_a_phones_first_screen(browser, live_server, operator, transactional_db) -> None:
    demo: Any = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        _login(page, live_server, operator)
        page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
        box = page.get_by_role("button", name="Reassign…").bounding_box()
        assert box is not None and box["y"] + box["height"] <= 844, box  # it was at y=4633 of 4974 px
    finally:
        context.close()
