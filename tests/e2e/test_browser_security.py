"""Security review (issue 7) in a real browser: Debian's chromium driven by Playwright against live_server.

- a hostile tag value in the user-data snippet is shown as text, and its script never runs;
- every page passes the Content-Security-Policy with htmx at work (no violation reported);
- a failed htmx request shows the error banner instead of nothing;
- an expired session sends the browser to the login page instead of swapping it into a live table.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from pools.models import Cluster, LaunchSpec
from tests.fixtures.web import PASSWORD, assign, make_eip, make_node

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

# Playwright's sync API runs an event loop in this thread; the ORM calls between browser steps are blocking.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# No single quote in it: the snippet shows it inside one shell word, '…', unchanged.
HOSTILE = '</code></pre><img src=x onerror="document.title=`pwned`"><script>document.title="pwned"</script>'

# Runs before any page script (through the DevTools protocol, so the CSP does not apply to it): collects
# every CSP violation the page reports.
COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    e.violatedDirective + " " + (e.blockedURI || "inline") + " " + e.sourceFile + ":" + e.lineNumber);
});
window.__settled = 0;
document.addEventListener("htmx:afterSettle", () => { window.__settled += 1; });
"""


def _login(page, live_server, user: User, next_path: str = "/") -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_path}")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}{next_path}")


def _world() -> LaunchSpec:
    cluster = Cluster.objects.create(name="prod", region="us-east-1")
    spec = LaunchSpec.objects.create(
        name="egress", cluster=cluster, labels={"eks.amazonaws.com/nodegroup": "egress"},
        tag_key="eipdash/pool", tag_value="egress",
    )
    eips = [make_eip(1), make_eip(2)]
    node = make_node("node-a", spec=spec, index=1, state="ready")
    make_node("node-b", spec=spec, index=2, state="waiting", startup_tainted=True)
    assign(eips[0], node)
    return spec


def test_a_hostile_tag_value_never_runs_in_the_spec_page(page, live_server, operator, transactional_db) -> None:
    spec = _world()
    # A row as an old spec, or one created around validation, may hold it.
    LaunchSpec.objects.filter(pk=spec.pk).update(tag_value=HOSTILE)
    superuser = User.objects.create_superuser("sam-super", password=PASSWORD)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    _login(page, live_server, superuser)
    page.goto(f"{live_server.url}/launch-specs/egress/")
    page.wait_for_function("() => window.htmx !== undefined")
    snippet = page.locator("#user-data")
    assert '<script>document.title="pwned"</script>' in snippet.inner_text()
    assert snippet.locator("script, img").count() == 0
    assert page.title() != "pwned" and not dialogs


def test_every_page_passes_the_csp_with_htmx(page, live_server, operator, transactional_db) -> None:
    spec = _world()
    eip = spec.assignments.get().eip
    superuser = User.objects.create_superuser("sam-super", password=PASSWORD)
    page.add_init_script(COLLECT_VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    seen: dict[str, list[str]] = {}

    def visit(path: str) -> None:
        response = page.goto(live_server.url + path)
        assert response is not None and response.ok, path
        assert "content-security-policy" in response.headers
        seen[path] = page.evaluate("window.__cspViolations")

    visit("/accounts/login/")
    _login(page, live_server, operator)
    for path in ("/", "/launch-specs/", "/launch-specs/egress/", "/launch-specs/egress/edit/", "/launch-specs/new/",
                 "/launch-specs/import/", "/eips/", "/nodes/", "/history/"):
        visit(path)
    # The overview's live part, swapped by htmx at least once.
    visit("/")
    page.wait_for_function("() => window.__settled >= 1", timeout=15_000)
    seen["/ after a poll"] = page.evaluate("window.__cspViolations")
    # The reassign dialog, loaded by htmx.
    visit(f"/eips/{eip.allocation_id}/")
    page.select_option("select[name=node]", "node-b")
    page.click("text=Reassign…")
    page.locator("dialog#reassign-dialog").wait_for()
    seen["reassign dialog"] = page.evaluate("window.__cspViolations")
    page.context.clear_cookies()
    _login(page, live_server, superuser)
    for path in ("/admin/", "/admin/pools/cluster/add/", "/admin/pools/launchspec/"):
        visit(path)
    assert {path: found for path, found in seen.items() if found} == {}
    assert not [text for text in console if "Content Security Policy" in text]


def test_a_failed_htmx_poll_shows_the_error_banner(page, live_server, viewer, transactional_db) -> None:
    _world()
    _login(page, live_server, viewer, "/eips/")
    assert page.locator("#htmx-error").is_hidden()
    # The account loses its group: the next poll answers 403, which htmx alone would swallow.
    viewer.groups.remove(Group.objects.get(name="viewers"))
    banner = page.locator("#htmx-error")
    banner.wait_for(state="visible", timeout=15_000)
    assert "403" in banner.inner_text() and "not allowed" in banner.inner_text()
    # The table the user was reading stays as it was.
    assert page.locator("#eip-table").is_visible()
    page.click(".htmx-error-close")
    assert banner.is_hidden()


def test_an_expired_session_goes_to_the_login_page(page, live_server, viewer, transactional_db) -> None:
    _world()
    _login(page, live_server, viewer, "/eips/")
    page.context.clear_cookies()
    # The next poll is answered with HX-Redirect: the whole page goes to the login form, with the way back.
    page.wait_for_url(f"{live_server.url}/accounts/login/?next=%2Feips%2F", timeout=15_000)
    assert page.locator("input[name=password]").is_visible()
    assert page.locator("#eip-table").count() == 0
