"""The dashboard in a real browser: Debian's chromium driven by Playwright against pytest-django's live_server.

- log in through the form;
- a row of the EIP inventory updates by itself after an assignment is written to the record;
- the CSV export downloads;
- the reassign button opens its confirmation dialog, and the move or the refusal shows up in place.

The assignment is written as rows (what the workers would write), and the test plays the worker for the
reassign request the page records: these tests are about the browser side. The move itself, against the EC2
and Kubernetes emulators and on a real Celery worker, is tested in tests/workers/ and tests/e2e/.

Screenshots of every page land in var/screenshots/ (docs/ holds the ones picked for the README).
"""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path

import pytest
from django.utils import timezone

from pools.models import Assignment, Cluster, ElasticIP, Event, LaunchSpec, Node, ReassignRequest
from pools.services import reassign_request_finish
from tests.fixtures.polling import eventually
from tests.fixtures.web import PASSWORD, assign, make_eip, make_node, record

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between browser
# steps are ordinary blocking calls, which Django would otherwise refuse next to a running loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _login(page, live_server, user) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next=/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def demo_world() -> dict[str, object]:
    """A believable night: three specs, a pool running dry, a draining node, a conflict, 24 h of history."""
    rng = random.Random(7)
    now = timezone.now()
    # A kube context and a recent successful pass: this night's specs are configured right, so that the
    # overview's "Needs attention" panel shows only what the tests below add.
    cluster = Cluster.objects.create(name="prod-eu", region="eu-west-1", kube_context="prod-eu")
    specs = {
        name: LaunchSpec.objects.create(
            name=name,
            cluster=cluster,
            labels={"eks.amazonaws.com/nodegroup": name},
            tag_key="eipdash/pool",
            tag_value=name,
            last_successful_pass_at=now,
        )
        for name in ("egress-nat", "ingress-edge", "partner-sftp")
    }
    index = 1
    eips: dict[str, list[ElasticIP]] = {}
    for name, size in (("egress-nat", 6), ("ingress-edge", 4), ("partner-sftp", 2)):
        eips[name] = []
        for _ in range(size):
            eips[name].append(make_eip(index, region="eu-west-1", tags={"eipdash/pool": name, "team": "platform"}))
            index += 1
    nodes: dict[str, list[Node]] = {name: [] for name in specs}
    for name, spec in specs.items():
        held = {"egress-nat": 4, "ingress-edge": 3, "partner-sftp": 2}[name]
        for n in range(held):
            first = now - dt.timedelta(minutes=rng.randint(20, 600))
            node = make_node(
                f"ip-10-0-{index}-{n}.eu-west-1.compute.internal", spec=spec, index=index * 10 + n,
                state=Node.State.READY, az="eu-west-1a", first_seen_at=first,
                eip_ready_at=first + dt.timedelta(seconds=rng.choice([3, 4, 6, 7, 9, 12, 14, 18, 25, 40])),
            )  # fmt: skip
            nodes[name].append(node)
            assign(eips[name][n], node, opened_at=first)
            record(Event.Kind.ASSIGNED, spec=spec, eip=eips[name][n], node=node, at=first, reason="new node")
            record(Event.Kind.TAINT_LIFTED, spec=spec, eip=eips[name][n], node=node, at=first, reason="EIP confirmed")
        index += 1
    egress = specs["egress-nat"]
    Node.objects.filter(pk=nodes["egress-nat"][0].pk).update(state=Node.State.DRAINING, draining=True, workload_pods=3)
    waiting = make_node("ip-10-0-9-1.eu-west-1.compute.internal", spec=egress, index=901, startup_tainted=True)
    nodes["egress-nat"].append(waiting)
    partner = specs["partner-sftp"]
    make_node("ip-10-0-9-7.eu-west-1.compute.internal", spec=partner, index=907, startup_tainted=True)
    LaunchSpec.objects.filter(pk=partner.pk).update(active_alerts=["pool_exhausted"])
    record(Event.Kind.POOL_EXHAUSTED, spec=partner, at=now - dt.timedelta(minutes=7),
           reason="1 node waits, 0 free EIPs in pool eipdash/pool=partner-sftp")  # fmt: skip
    stray = make_eip(99, region="eu-west-1", tags={"eipdash/pool": "ingress-edge"}, association_id="eipassoc-stray",
                     instance_id="i-0f00dbeef0000001", eni_id="eni-0f00dbeef0000001")  # fmt: skip
    record(Event.Kind.CONFLICT, spec=specs["ingress-edge"], eip=stray, at=now - dt.timedelta(minutes=22),
           reason="pool EIP found on i-0f00dbeef0000001, which is not a node of ingress-edge; left alone")  # fmt: skip
    # 24 h of churn: closed assignments so that the use chart moves.
    for hour in range(24, 0, -1):
        for name, spec in specs.items():
            for k in range(rng.randint(0, 1)):
                opened = now - dt.timedelta(hours=hour, minutes=rng.randint(0, 50))
                node = make_node(f"old-{name}-{hour}-{k}", spec=spec, index=10_000 + hour * 10 + k + index * 1000,
                                 state=Node.State.GONE, first_seen_at=opened,
                                 eip_ready_at=opened + dt.timedelta(seconds=rng.randint(3, 30)))  # fmt: skip
                eip = eips[name][-1] if name != "partner-sftp" else eips[name][0]
                Assignment.objects.create(eip=eip, node=node, launch_spec=spec, opened_at=opened,
                                          closed_at=opened + dt.timedelta(minutes=rng.randint(5, 9)),
                                          close_reason="drained")  # fmt: skip
                record(Event.Kind.RELEASED, spec=spec, eip=eip, node=node, at=opened + dt.timedelta(minutes=30),
                       reason="drained: 0 workload pods")  # fmt: skip
        index += 1
    return {"specs": specs, "eips": eips, "nodes": nodes, "waiting": waiting}


def test_login_and_every_page_renders(page, live_server, operator, transactional_db) -> None:
    demo = demo_world()
    _login(page, live_server, operator)
    assert page.locator("h1").inner_text() == "Overview"
    SHOTS.mkdir(parents=True, exist_ok=True)
    egress_ip = demo["eips"]["egress-nat"][0]
    for name, path in [
        ("overview", "/"),
        ("launch-specs", "/launch-specs/"),
        ("launch-spec-detail", "/launch-specs/egress-nat/"),
        ("eips", "/eips/"),
        ("eip-detail", f"/eips/{egress_ip.allocation_id}/"),
        ("nodes", "/nodes/"),
        ("history", "/history/"),
        ("launch-spec-new", "/launch-specs/new/"),
        ("launch-spec-import", "/launch-specs/import/"),
    ]:
        response = page.goto(live_server.url + path)
        assert response.status == 200, path
        # htmx is loaded from our static files, never a CDN.
        assert page.evaluate("typeof window.htmx") == "object", path
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_anonymous_is_sent_to_the_login_form(page, live_server, transactional_db) -> None:
    page.goto(f"{live_server.url}/eips/")
    assert "/accounts/login/" in page.url
    assert page.locator("h1").inner_text() == "Log in to eipdash"
    page.screenshot(path=str(SHOTS / "login.png"))


def test_a_row_updates_live_after_an_assignment(page, live_server, viewer, transactional_db) -> None:
    demo = demo_world()
    free_eip = demo["eips"]["egress-nat"][4]
    waiting = demo["waiting"]
    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/eips/?spec=egress-nat")
    row = page.locator(f"#eip-{free_eip.allocation_id}")
    assert row.get_attribute("data-state") == "free"
    # What the workers write when AWS confirms an association.
    assign(free_eip, waiting)
    Node.objects.filter(pk=waiting.pk).update(
        state=Node.State.READY, startup_tainted=False, eip_ready_at=timezone.now()
    )
    page.wait_for_selector(f"#eip-{free_eip.allocation_id}[data-state=assigned]", timeout=12_000)
    assert waiting.name in page.locator(f"#eip-{free_eip.allocation_id} [data-field=node]").inner_text()


def test_csv_export_downloads_the_filtered_set(page, live_server, viewer, transactional_db) -> None:
    demo_world()
    _login(page, live_server, viewer)
    page.goto(f"{live_server.url}/history/?event=conflict")
    with page.expect_download() as info:
        page.click("#export-csv")
    content = Path(info.value.path()).read_text()
    lines = content.strip().splitlines()
    assert (
        lines[0] == "timestamp,event,launch_spec,cluster,region,node,instance_id,public_ip,allocation_id,actor,reason"
    )
    assert len(lines) == 3 and ",conflict,ingress-edge," in lines[1]
    assert lines[2] == "# eipdash export complete: 1 rows"  # the trailer: the download is whole
    assert info.value.suggested_filename.endswith(".csv")


def _act_as_worker(*, state: str, message: str, move_to: Node | None = None) -> ReassignRequest:
    """What a worker does with the pending request the page just made: for a move, the records the
    executor writes once AWS confirmed; then the outcome on the request, which the page is polling."""
    request: ReassignRequest = eventually(
        lambda: ReassignRequest.objects.filter(state=ReassignRequest.State.PENDING).first(), timeout=10,
        what="the page records a reassign request")
    if move_to is not None:
        eip = request.eip
        old = Assignment.objects.filter(eip=eip, closed_at__isnull=True).first()
        if old:
            Assignment.objects.filter(pk=old.pk).update(closed_at=timezone.now(), close_reason="reassigned")
        assign(eip, move_to, actor=request.actor, opened_at=timezone.now())
        record(Event.Kind.REASSIGNED, spec=move_to.launch_spec, eip=eip, node=move_to, actor=request.actor,
               reason=f"moved by hand from {old.node.name if old else 'no node'} to {move_to.name}")  # fmt: skip
    reassign_request_finish(request_id=request.pk, state=state, message=message)
    return request


def test_reassign_through_the_button_and_its_confirmation(page, live_server, operator, transactional_db) -> None:
    demo = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    holder = demo["nodes"]["egress-nat"][1]
    target = demo["waiting"]
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
    page.select_option("select[name=node]", target.name)
    page.click("text=Reassign…")
    dialog = page.locator("dialog#reassign-dialog")
    dialog.wait_for()
    text = dialog.inner_text()
    assert f"Move {eip.public_ip} to {target.name}?" in text
    assert f"{holder.name} gets the startup taint back first" in text and "another free EIP" in text
    page.screenshot(path=str(SHOTS / "reassign-dialog.png"))

    # First a refusal: the dialog says it is waiting for a worker, then shows the worker's reason.
    page.click("#reassign-confirm")
    page.wait_for_selector("#reassign-pending")
    refused = _act_as_worker(state="refused", message=f"{target.name} already has an EIP (203.0.113.250).")
    page.wait_for_selector("#reassign-error")
    assert "already has an EIP" in page.locator("#reassign-error").inner_text()
    assert refused.actor == operator.username and refused.node_name == target.name
    assert Assignment.objects.get(eip=eip, closed_at__isnull=True).node_id == holder.pk

    # Then the move: the refusal offers the targets again (Move is hidden until one is chosen and confirmed);
    # once the worker says done, the page goes back to the EIP, which shows its new node.
    page.click("#reassign-review")
    page.click("#reassign-confirm")
    page.wait_for_selector("#reassign-pending")
    _act_as_worker(state="done", message=f"{eip.public_ip} moved to {target.name}.", move_to=target)
    # The page the move sends the browser to (the live refresh may show the new node before it comes).
    page.wait_for_url(f"**/eips/{eip.allocation_id}/?moved=*")
    page.wait_for_selector(f"#eip-node:has-text('{target.name}')")
    assert "moved to" in page.locator(".messages").inner_text()
    assert Assignment.objects.get(eip=eip, closed_at__isnull=True).node_id == target.pk
    assert page.locator("#eip-live .kind-reassigned").count() >= 1


def test_cancel_closes_the_dialog(page, live_server, operator, transactional_db) -> None:
    demo = demo_world()
    eip = demo["eips"]["egress-nat"][1]
    _login(page, live_server, operator)
    page.goto(f"{live_server.url}/eips/{eip.allocation_id}/")
    page.click("text=Reassign…")
    page.locator("dialog#reassign-dialog").wait_for()
    page.click("#reassign-cancel")
    page.locator("dialog#reassign-dialog").wait_for(state="detached")
    assert not ReassignRequest.objects.exists()


def test_pages_work_without_javascript(browser, live_server, viewer, transactional_db) -> None:
    demo_world()
    context = browser.new_context(java_script_enabled=False)
    tab = context.new_page()
    _login(tab, live_server, viewer)
    tab.goto(f"{live_server.url}/eips/?state=assigned")
    assert tab.locator("#eip-table tbody tr").count() == 9
    tab.click("#eip-table .refresh a")
    assert tab.locator("#eip-table tbody tr[data-state=assigned]").count() == 9
    context.close()
