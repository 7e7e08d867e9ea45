"""Every page of the dashboard at 1440 px and at 390 px, in chromium: each renders without sideways scrolling,
and a screenshot of each lands in var/screenshots/ui-<width>-<page>.png for a person to look at.

With EIPDASH_README_SHOTS=1 the 1440 px shots the README shows are written to docs/ as well.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from pools.models import Event, LaunchSpec, Node
from tests.e2e.test_browser import CHROMIUM, SHOTS, _login, demo_world
from tests.fixtures.web import record

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

DOCS = Path(__file__).resolve().parents[2] / "docs"
WAITING_NODE = "ip-10-0-9-7.eu-west-1.compute.internal"
README_SHOTS = {"overview", "launch-spec-detail", "eips", "nodes", "node", "reassign-dialog"}


@pytest.mark.parametrize("width,height", [(1440, 1000), (390, 844)])
def test_every_page_at_desktop_and_phone_width(browser, live_server, operator, transactional_db, settings,
                                               width: int, height: int) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 3600  # the demo's passes stay fresh while the shots are taken
    demo: Any = demo_world()
    # One thing to attend to, as on a real night: a spec whose selector matches no EIP.
    LaunchSpec.objects.create(name="partner-vpn", cluster=demo["specs"]["egress-nat"].cluster,
                              labels={"eks.amazonaws.com/nodegroup": "partner-vpn"}, tag_key="eipdash/pool",
                              tag_value="partner-vpn", last_successful_pass_at=timezone.now())
    for minutes in range(2, 40, 3):
        record(Event.Kind.POOL_EXHAUSTED, spec=demo["specs"]["partner-sftp"],
               at=timezone.now() - dt.timedelta(minutes=minutes),
               reason="1 node needs an EIP and the pool has 0 free (2 in the pool)")
    eip = demo["eips"]["egress-nat"][1]
    # The node page's shot: partner-sftp's node waiting on its empty pool, labelled as the workers write it.
    Node.objects.filter(name=WAITING_NODE).update(labels={"eks.amazonaws.com/nodegroup": "partner-sftp"})
    context = browser.new_context(viewport={"width": width, "height": height},
                                  device_scale_factor=1 if width > 800 else 2, is_mobile=width < 800)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page = context.new_page()
        _login(page, live_server, operator)
        pages = [
            ("overview", "/"),
            ("launch-specs", "/launch-specs/"),
            ("launch-spec-detail", "/launch-specs/egress-nat/"),
            ("eips", "/eips/"),
            ("eip-detail", f"/eips/{eip.allocation_id}/"),
            ("nodes", "/nodes/"),
            ("node", f"/nodes/prod-eu/{WAITING_NODE}/"),
            ("history", "/history/"),
            ("launch-spec-new", "/launch-specs/new/"),
            ("launch-spec-import", "/launch-specs/import/"),
            ("not-found", "/launch-specs/nosuch/"),
        ]
        for name, path in pages:
            page.goto(live_server.url + path)
            page.wait_for_load_state()
            overflow = page.evaluate("document.documentElement.scrollWidth")
            shot = SHOTS / f"ui-{width}-{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert overflow <= width, (name, overflow)
            if width > 800 and name in README_SHOTS and os.environ.get("EIPDASH_README_SHOTS") == "1":
                shutil.copyfile(shot, DOCS / f"{name}.png")
        page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
        page.click("text=Reassign…")
        page.locator("dialog#reassign-dialog").wait_for()
        shot = SHOTS / f"ui-{width}-reassign-dialog.png"
        page.screenshot(path=str(shot))
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        if width > 800 and os.environ.get("EIPDASH_README_SHOTS") == "1":
            shutil.copyfile(shot, DOCS / "reassign-dialog.png")
    finally:
        context.close()
