"""Destructive actions ask first, and copying holds nothing up, in chromium (issue 20, items 5 and 7):

- Disable and drain (the launch spec page) and Revoke (the API tokens page) open a modal that spells out the
  consequence with focus on Cancel; Cancel changes nothing, the confirmation acts. Without JavaScript the
  same confirmation comes as a page;
- the new token's secret has a Copy button;
- Copy on the EIPs page leaves focus on the button but does not hold the table's live refresh, and says
  "Copied" in a status line outside the table.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.sync_api import expect

from pools.api.tokens import token_create
from pools.models import ApiToken, LaunchSpec
from tests.e2e.test_browser import CHROMIUM, _login, demo_world
from tests.fixtures.web import assign, make_node

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_launch_spec_disable_asks_first(page, live_server, operator, transactional_db) -> None:
    demo_world()
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/launch-specs/egress-nat/")
    button = page.locator("#disable-spec")
    button.click()
    dialog = page.locator("dialog#confirm-disable")
    expect(dialog).to_be_visible()
    assert dialog.evaluate("d => d.matches(':modal')")
    expect(dialog).to_contain_text("keep their EIPs (4 EIPs held now)")
    expect(page.locator("#disable-cancel")).to_be_focused()
    page.keyboard.press("Enter")  # on Cancel
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    assert LaunchSpec.objects.get(name="egress-nat").enabled is True
    button.click()
    page.click("#disable-spec-confirm")
    expect(page.locator(".messages")).to_contain_text("Launch spec egress-nat disabled")
    assert LaunchSpec.objects.get(name="egress-nat").enabled is False


def test_launch_spec_disable_asks_first_without_javascript(browser, live_server, operator, transactional_db) -> None:
    demo_world()
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        _login(page, live_server, operator)
        page.goto(f"{live_server.url}/launch-specs/egress-nat/")
        page.click("#disable-spec")
        expect(page.locator("dialog#confirm-disable")).to_be_visible()
        assert LaunchSpec.objects.get(name="egress-nat").enabled is True
        page.click("#disable-cancel")
        expect(page.locator("dialog#confirm-disable")).to_be_hidden()
        page.click("#disable-spec")
        page.click("#disable-spec-confirm")
        expect(page.locator(".messages")).to_contain_text("Launch spec egress-nat disabled")
        assert LaunchSpec.objects.get(name="egress-nat").enabled is False
    finally:
        context.close()


def test_api_tokens_revoke_asks_first(page, live_server, viewer, transactional_db) -> None:
    new = token_create(user=viewer, name="laptop")
    token = new.token
    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/account/api-tokens/")
    button = page.locator(f"#token-{token.pk} button")
    button.click()
    dialog = page.locator(f"dialog#revoke-{token.pk}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("gets 401")
    expect(page.locator(f"#revoke-{token.pk}-cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    button.click()
    page.click(f"#revoke-{token.pk}-confirm")
    expect(page.locator(f"#token-{token.pk}")).to_have_attribute("data-state", "revoked")
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_api_tokens_new_secret_copy_button(page, live_server, viewer, transactional_db) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/account/api-tokens/")
    page.fill("input[name=name]", "laptop")
    page.click("#token-create-submit")
    secret = page.locator("#token-secret").inner_text().strip()
    page.locator("#token-created").get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied the new token's secret.")
    assert page.evaluate("navigator.clipboard.readText()") == secret


def test_eip_list_copy_does_not_hold_the_live_refresh(page, live_server, operator, transactional_db,
                                                      fast_refresh) -> None:
    demo: Any = demo_world()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/?spec=egress-nat")
    first = demo["eips"]["egress-nat"][0]
    page.locator(f"#eip-{first.allocation_id} button.copy").first.click()
    # The word of it, in a status line that lives 2.5 s: read it now, not after a refresh that a loaded machine
    # may bring later than that (CI did). It sits outside every live part, so no refresh can wipe it.
    expect(page.locator("#copy-status")).to_have_text(f"Copied {first.public_ip}.")
    assert page.evaluate("document.getElementById('copy-status').closest('[data-live]') === null")
    assert page.evaluate("navigator.clipboard.readText()") == first.public_ip
    # Focus stays on the button (the keyboard keeps its place)...
    assert page.evaluate("document.activeElement.getAttribute('data-copy')") == first.public_ip
    # ...yet the table goes on refreshing: a new assignment shows up.
    free_eip = demo["eips"]["egress-nat"][5]
    node = make_node("ip-10-0-77-7.eu-west-1.compute.internal", spec=demo["specs"]["egress-nat"], index=777)
    assign(free_eip, node)
    expect(page.locator(f"#eip-{free_eip.allocation_id} [data-field=node]")).to_contain_text(node.name)
    assert page.evaluate("document.activeElement.getAttribute('data-copy')") == first.public_ip
    # A status, not a fixture: it goes away by itself.
    expect(page.locator("#copy-status")).to_have_text("")
