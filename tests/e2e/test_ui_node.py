"""The node page in chromium: reached by clicking a node's name on the nodes list, it says why the node waits,
at the top, and shows its timeline from first seen (pools/views_node.py, templates/pools/node_detail.html)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from pools.models import Node
from tests.e2e.test_browser import CHROMIUM, _login, demo_world

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

WAITING = "ip-10-0-9-7.eu-west-1.compute.internal"  # demo_world's node of partner-sftp, whose 2 EIPs are held


def test_a_click_on_a_node_name_opens_its_page_with_why_it_waits(page, live_server, viewer,
                                                                 transactional_db) -> None:
    demo_world()
    # Labelled for its spec, as the workers write a node they list for it.
    Node.objects.filter(name=WAITING).update(labels={"eks.amazonaws.com/nodegroup": "partner-sftp"})
    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/nodes/")
    page.get_by_role("link", name=WAITING, exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/nodes/prod-eu/{WAITING}/")
    expect(page.locator("h1")).to_have_text(WAITING)
    expect(page.locator("#node-reason")).to_contain_text("waiting: the pool of partner-sftp has 0 free of 2 (since")
    moments = page.locator("#node-timeline [data-what]")
    expect(moments).to_have_count(2)
    assert [moments.nth(i).get_attribute("data-what") for i in range(2)] == ["registered", "waiting"]
    expect(page.locator("#node-kube-events")).to_contain_text(
        f"involvedObject.kind=Node,involvedObject.name={WAITING}")
