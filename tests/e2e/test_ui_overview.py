"""The overview and the spec page tell the truth about now, in a real browser (Debian's chromium, Playwright):

- "Disable and drain" leaves a draining spec, with what holds each EIP back, never a misconfigured one;
- alerts are ongoing or resolved, the ongoing first; one that stops holding turns resolved in place, and rows
  that come and go move nothing below them (the charts are above);
- on a phone, an alert row opens to show all its fields, and stays open across live refreshes.

The record is written as rows (what the workers would write): these tests are about the browser side.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from pools.models import Cluster, Event, LaunchSpec, Node
from tests.e2e.test_browser import CHROMIUM, SHOTS, _login, demo_world
from tests.fixtures.web import assign, make_eip, make_node, record
from tests.pools.plans import store_plan_as_a_pass

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _draining_spec() -> LaunchSpec:
    """A configured spec holding two EIPs: one on a node that drains with 3 workload pods, one on a running
    node."""
    cluster = Cluster.objects.create(name="prod", region="us-east-1", kube_context="prod")
    spec = LaunchSpec.objects.create(name="egress", cluster=cluster, labels={"role": "egress"},
                                     tag_key="eipdash/pool", tag_value="egress", last_successful_pass_at=timezone.now())
    assign(make_eip(1), make_node("node-a", spec=spec, index=1, state=Node.State.READY))
    assign(make_eip(2), make_node("node-c", spec=spec, index=2, state=Node.State.DRAINING, draining=True,
                                  drain_reason="cordoned", workload_pods=3))
    make_eip(3)  # free
    return spec


def test_disable_and_drain_leaves_a_draining_spec_with_what_holds_each_eip(page, live_server, operator,
                                                                           transactional_db, fast_refresh) -> None:
    _draining_spec()
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/launch-specs/egress/")
    # The button may ask first: the browser's confirm(), an in-page dialog or a page of its own. Accept each.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#disable-spec").click()
    draining = page.locator("#spec-draining")
    confirm = page.locator("form[action$='/disable/'] button[type=submit]:not(#disable-spec)")
    expect(draining.or_(confirm).first).to_be_visible()
    if not draining.is_visible():
        confirm.first.click()
    expect(draining).to_contain_text("Draining. 2 EIPs left.")
    # The disabled spec's next pass plans its drain and stores that plan; the page's next poll shows it.
    store_plan_as_a_pass(LaunchSpec.objects.get(name="egress"))
    expect(draining).to_contain_text("203.0.113.2 on node-c: 3 workload pods still run")
    expect(draining).to_contain_text("203.0.113.1 on node-a: the node runs and is not draining")
    expect(page.locator("#spec-problems")).to_have_count(0)
    expect(page.locator("#spec-live [data-status]").first).to_have_attribute("data-status", "draining")
    expect(page.locator("#plan-drain")).to_contain_text("release 203.0.113.2 from node-c once its 3 workload pods "
                                                        "are gone")
    expect(page.locator("#spec-live")).not_to_contain_text("misconfigured")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "spec-draining.png"), full_page=True)

    page.goto(f"{live_server.url}/")
    tile = page.locator("article.tile[data-spec='egress']")
    expect(tile).to_have_attribute("data-status", "draining")
    expect(tile).to_contain_text("draining · 2 EIPs left")
    expect(tile).not_to_contain_text("misconfigured")
    expect(page.locator("#problems")).to_have_count(0)


def test_alerts_are_ongoing_or_resolved_and_never_move_the_charts(page, live_server, operator, transactional_db,
                                                                  fast_refresh) -> None:
    demo: Any = demo_world()
    partner = demo["specs"]["partner-sftp"]
    LaunchSpec.objects.filter(pk=partner.pk).update(last_reconciled_at=timezone.now())
    _login(page, live_server, operator)
    rows = page.locator("#alerts details.alert-row")
    # partner-sftp's pool is still exhausted; ingress-edge's conflict no longer holds, although it is newer.
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-spec", "partner-sftp")
    expect(rows.nth(0)).to_have_attribute("data-status", "ongoing")
    expect(rows.nth(1)).to_have_attribute("data-spec", "ingress-edge")
    expect(rows.nth(1)).to_have_attribute("data-status", "resolved")
    chart = page.locator("svg.chart").first
    top = chart.bounding_box()["y"]

    # The pool gets an EIP back: its alert turns resolved in place; and a new alert row appears.
    LaunchSpec.objects.filter(pk=partner.pk).update(active_alerts=[])
    record(Event.Kind.ERROR, spec=demo["specs"]["egress-nat"], reason="a step failed once")
    expect(page.locator("#alerts details[data-spec='partner-sftp']")).to_have_attribute("data-status", "resolved")
    expect(rows).to_have_count(3)
    assert chart.bounding_box()["y"] == top


def test_an_alert_row_opens_on_a_phone_and_stays_open(browser, live_server, operator, transactional_db,
                                                      fast_refresh) -> None:
    demo: Any = demo_world()
    ingress = demo["specs"]["ingress-edge"]
    long_node = "ip-10-0-100-200.eu-west-1.compute.internal"
    record(Event.Kind.CONFLICT, spec=ingress, at=timezone.now() - dt.timedelta(minutes=1),
           node=make_node(long_node, spec=ingress, index=4242),
           reason=f"node {long_node} also matches launch spec(s) partner-sftp; no EIP is assigned to it")
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        _login(page, live_server, operator)
        row = page.locator("#alerts details[data-spec='ingress-edge']")
        reason = row.locator("[data-field=reason]")
        expect(reason).to_be_hidden()
        row.locator("summary").click()
        expect(reason).to_be_visible()
        expect(reason).to_contain_text("also matches launch spec(s) partner-sftp")
        expect(row.locator("dt", has_text="Latest reason")).to_be_visible()
        node = row.locator("[data-field=node]")
        expect(node).to_have_text(long_node)
        # Node ids are never broken inside, in their field or in the reason: the reason wraps between words.
        for whole in (node, reason.locator(".token", has_text=long_node)):
            height = whole.evaluate("element => element.getBoundingClientRect().height")
            line = whole.evaluate("element => parseFloat(getComputedStyle(element).lineHeight)")
            assert height < 1.5 * line, (height, line)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # Nothing sticks out of the card: every field fits its row, a long token scrolls in its own field.
        assert row.evaluate("element => element.scrollWidth <= element.clientWidth")
        page.locator("#alerts").screenshot(path=str(SHOTS / "ui-390-overview-alert-open.png"))
        # Live refreshes go on once focus leaves the part, and the row stays open.
        page.evaluate("document.activeElement.blur()")
        refreshed = page.locator("#overview-live .refresh time")
        stamp = refreshed.get_attribute("datetime") or ""
        expect(refreshed).not_to_have_attribute("datetime", stamp)
        assert row.evaluate("element => element.open") is True
    finally:
        context.close()
