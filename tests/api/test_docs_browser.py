"""/api/docs/ in chromium: Swagger UI loads from /static/ (drf-spectacular-sidecar), runs under the CSP without a
violation, and its "Try it out" calls the API with the browser's session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from pools.models import Cluster, LaunchSpec
from tests.fixtures.web import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + e.sourceFile);
});
"""


def test_the_docs_load_under_the_csp_and_try_it_out_works(page, live_server, viewer: User,
                                                          transactional_db: None) -> None:
    cluster = Cluster.objects.create(name="prod", region="us-east-1")
    LaunchSpec.objects.create(name="egress", cluster=cluster, labels={"pool": "egress"}, tag_key="eipdash/pool")
    page.add_init_script(COLLECT_VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{live_server.url}/accounts/login/?next=/api/docs/")
    page.fill("input[name=username]", viewer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/api/docs/")
    assert "content-security-policy" in page.request.get(f"{live_server.url}/api/docs/").headers
    # Swagger UI has fetched the schema and drawn every operation.
    page.locator(".opblock").nth(13).wait_for()
    assert page.locator(".opblock").count() == 14
    operation = page.locator("#operations-v1-launch_specs_list")
    operation.locator(".opblock-summary").click()
    page.click("button.try-out__btn")
    page.click("button.execute")
    body = page.locator(".live-responses-table .response-col_description pre").first
    body.wait_for()
    assert '"egress"' in body.inner_text()
    assert page.evaluate("window.__cspViolations") == []
    assert not [text for text in console if "Content Security Policy" in text or "Refused" in text]


def test_the_tokens_page_creates_and_revokes_under_the_csp(page, live_server, viewer: User,
                                                          transactional_db: None) -> None:
    page.add_init_script(COLLECT_VIOLATIONS)
    page.goto(f"{live_server.url}/accounts/login/?next=/")
    page.fill("input[name=username]", viewer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.click("text=API tokens")
    page.wait_for_url(f"{live_server.url}/account/api-tokens/")
    page.fill("input[name=name]", "laptop")
    page.select_option("select[name=expires]", "30d")
    page.click("#token-create-submit")
    secret = page.locator("#token-secret").inner_text().strip()
    assert secret.startswith("eipd_")
    violations = page.evaluate("window.__cspViolations")
    listed = page.request.get(f"{live_server.url}/api/v1/launch-specs/", headers={"Authorization": f"Bearer {secret}"})
    assert listed.status == 200
    page.goto(f"{live_server.url}/account/api-tokens/")
    assert secret not in page.content() and "laptop" in page.inner_text("#token-table")
    page.click("#token-table button:has-text('Revoke')")
    page.click("dialog[open] button:has-text('Revoke')")  # Revoke asks first
    page.locator("#token-table [data-state=revoked]").wait_for()
    revoked = page.request.get(f"{live_server.url}/api/v1/launch-specs/", headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status == 401
    assert violations == [] and page.evaluate("window.__cspViolations") == []
