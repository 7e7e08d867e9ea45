"""The dashboard in a real browser on top of the real engine: the emulators change, a pass runs through
the adapters, and the page follows; the reassign button has a real Celery worker move the EIP in the EC2
emulator."""

from __future__ import annotations

import pytest

from tests.e2e.stack import Stack
from tests.e2e.test_browser import CHROMIUM, _login
from tests.fixtures.world import TAINT, World
from workers import executor

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]


def test_row_updates_live_after_an_assignment_in_the_emulators(page, live_server, viewer, world_tx: World) -> None:
    spec = world_tx.spec()
    (allocation_id,) = world_tx.eips(1)
    executor.reconcile_spec(spec.pk)  # the pool is known, nothing to assign yet
    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/eips/?spec=ingress")
    row = f"#eip-{allocation_id}"
    assert page.locator(row).get_attribute("data-state") == "free"
    world_tx.node("fresh")
    executor.reconcile_spec(spec.pk)
    assert world_tx.eip_on("fresh") == allocation_id
    page.wait_for_selector(f"{row}[data-state=assigned]", timeout=12_000)
    assert "fresh" in page.locator(f"{row} [data-field=node]").inner_text()


def test_reassign_button_moves_the_eip_in_aws(page, live_server, operator, world_tx: World, stack: Stack) -> None:
    spec = world_tx.spec()
    (allocation_id,) = world_tx.eips(1)
    world_tx.node("holder")
    executor.reconcile_spec(spec.pk)
    world_tx.node("waiting")
    executor.reconcile_spec(spec.pk)
    assert world_tx.eip_on("holder") == allocation_id and TAINT in world_tx.taints("waiting")
    stack.worker()  # the web only records the request: a Celery worker makes the move
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/{allocation_id}/")
    page.select_option("select[name=node]", "waiting")
    page.click("text=Reassign…")
    dialog = page.locator("dialog#reassign-dialog")
    dialog.wait_for()
    assert "holder gets the startup taint back first" in dialog.inner_text()
    page.click("#reassign-confirm")
    page.wait_for_selector("#reassign-status")
    # The worker process starts, takes the task, moves the EIP; the page follows and comes back to the EIP.
    page.wait_for_selector("#eip-node:has-text('waiting')", timeout=60_000)
    assert world_tx.eip_on("waiting") == allocation_id and world_tx.eip_on("holder") is None
    assert TAINT not in world_tx.taints("waiting") and TAINT in world_tx.taints("holder")
