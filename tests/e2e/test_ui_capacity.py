"""The spec page's Capacity section in chromium (templates/pools/partials/_spec_capacity.html): its figures, the
allowlist's Copy button, and the warning that names the node whose egress leaves by a NAT gateway, a link to that
node's page, which says the same."""

from __future__ import annotations

import os
from typing import cast

import pytest
from playwright.sync_api import expect

from pools import views
from pools.models import LaunchSpec, Node, RegionFacts
from tests.e2e.test_browser import CHROMIUM, _login, demo_world

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_the_capacity_section_copies_the_allowlist_and_flags_the_nat_routed_node(
        page, live_server, viewer, transactional_db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "CAPACITY_REFRESH_SECONDS", 1)
    demo = demo_world()
    nodes = cast(dict[str, list[Node]], demo["nodes"])["egress-nat"]
    RegionFacts.objects.create(region="eu-west-1", egress={
        "subnet-public": {"via": "internet-gateway", "target": "igw-0e1", "address": ""},
        "subnet-private": {"via": "nat", "target": "nat-0e2", "address": "198.51.100.7"}})
    Node.objects.filter(pk__in=[node.pk for node in nodes]).update(subnet_id="subnet-public")
    behind_nat = nodes[1]
    Node.objects.filter(pk=behind_nat.pk).update(subnet_id="subnet-private")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])

    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/launch-specs/egress-nat/")
    section = page.locator("#spec-capacity")
    expect(section.get_by_role("heading", name="Capacity", exact=True)).to_be_visible()
    expect(section.locator('[data-field="pool"]')).to_have_text("6")
    expect(section.locator("#demand-chart svg")).to_be_visible()
    warning = section.locator("#egress-warning")
    expect(warning).to_contain_text("Egress not through the EIP: 1 node.")
    expect(warning).to_contain_text("egress leaves through nat-0e2 (198.51.100.7)")
    expect(warning.get_by_role("link")).to_have_count(1)
    expect(section.locator("#below-min-free")).to_have_count(0)

    # The section polls on its own: a new minFree above the free EIPs shows up without a reload.
    LaunchSpec.objects.filter(name="egress-nat").update(min_free=5)
    expect(section.locator("#below-min-free")).to_have_text("below minFree")
    expect(page.locator("#spec-live")).to_have_count(1)

    section.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied the 6 IPs of egress-nat.")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("#allowlist").inner_text() and copied.count("\n") == 6

    warning.get_by_role("link", name=behind_nat.name).click()
    expect(page).to_have_url(f"{live_server.url}/nodes/prod-eu/{behind_nat.name}/")
    expect(page.locator("#node-egress")).to_contain_text("not through its EIP")
