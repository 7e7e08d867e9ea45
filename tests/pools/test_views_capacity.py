"""The spec page's Capacity section and the node page's egress (pools/views.py, pools/views_node.py): the frame the
page shows and htmx fills at once, the figures, the "below minFree" badge, the quota never guessed, the demand
chart's range, the allowlist (the API's list, to copy or download) and the nodes whose egress bypasses their EIP."""

from __future__ import annotations

import html
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from pools.models import LaunchSpec, Node, RegionFacts
from tests.fixtures.web import WebWorld, make_eip, make_node

pytestmark = pytest.mark.django_db

PAGE = "/launch-specs/egress/"
# What htmx sends when the page's frame loads the section, and when the section polls.
CAPACITY_POLL = {"HX-Request": "true", "HX-Target": "spec-capacity"}
EGRESS = {
    "subnet-public": {"via": "internet-gateway", "target": "igw-0a1", "address": ""},
    "subnet-private": {"via": "nat", "target": "nat-0b2", "address": "198.51.100.7"},
}


@pytest.fixture
def routed(web_world: WebWorld) -> WebWorld:
    """node-a (holding an EIP) in a public subnet, node-b (waiting) behind a NAT gateway."""
    RegionFacts.objects.create(region="us-east-1", egress=EGRESS)
    Node.objects.filter(name="node-a").update(subnet_id="subnet-public")
    Node.objects.filter(name="node-b").update(subnet_id="subnet-private")
    return web_world


def _part(page: str, element_id: str) -> str:
    """The element of that id, with what it holds (elements of its kind nested in it included)."""
    opened = page.rindex("<", 0, page.index(f'id="{element_id}"'))
    tag = re.match(r"<(\w+)", page[opened:])[1]  # type: ignore[index]
    depth = 0
    for found in re.finditer(rf"<(/?){tag}\b[^>]*>", page[opened:]):
        depth += -1 if found[1] else 1
        if depth == 0:
            return page[opened:opened + found.end()]
    raise AssertionError(f"{element_id} is not closed")


def _section(client: Client, **params: str) -> str:
    """The Capacity section as htmx loads it into the page (the page's own URL, HX-Target: spec-capacity)."""
    response = client.get(PAGE, params, headers=CAPACITY_POLL)
    assert response.status_code == 200
    return _part(response.content.decode(), "spec-capacity")


def test_the_page_shows_the_sections_frame_which_loads_it_at_once(routed: WebWorld, viewer_client: Client) -> None:
    page = viewer_client.get(PAGE, {"range": "7d"}).content.decode()
    frame = _part(page, "spec-capacity")
    opening = frame[:frame.index(">") + 1]
    # Loaded as soon as htmx sees it, with the page's query (the chart's range), and swapped for the section.
    assert 'hx-trigger="load"' in opening and 'hx-get="/launch-specs/egress/?range=7d"' in opening
    assert 'hx-swap="outerHTML"' in opening and "data-live" not in opening  # a paused refresh never holds it
    assert "Capacity</h2>" in frame and 'data-field="pool"' not in frame
    # The user data still lists the pool's IPs, in numeric order.
    assert "203.0.113.1 203.0.113.2" in html.unescape(_part(page, "user-data"))
    section = _section(viewer_client, range="7d")
    assert 'hx-trigger="every 30s"' in section and "data-live" in section and 'data-field="pool">2<' in section


def test_the_capacity_section_flags_the_nat_routed_node_and_not_the_public_one(
        routed: WebWorld, viewer_client: Client) -> None:
    LaunchSpec.objects.filter(pk=routed.spec.pk).update(min_free=3)
    section = _section(viewer_client)
    assert 'data-field="pool">2<' in section and 'data-field="in-use">1<' in section
    assert 'data-field="free">1<' in section and 'data-field="min-free">3<' in section
    assert "below minFree" in _part(section, "below-min-free")
    assert "the pool has 2" in _part(section, "capacity-shortfall")
    assert "quota unknown: not read yet" in _part(section, "capacity-quota")
    assert "per hour" in _part(section, "capacity-cost") and "per month" in _part(section, "capacity-cost")
    assert "1 by internet gateway (the EIP) · 1 by NAT · 0 no route" in _part(section, "capacity-egress")
    warning = _part(section, "egress-warning")
    assert '<a class="mono" href="/nodes/prod/node-b/">node-b</a>' in warning
    assert "egress leaves through nat-0b2 (198.51.100.7), the EIP only carries inbound" in warning
    assert "node-a" not in warning
    assert '<svg class="chart"' in _part(section, "demand-chart") and "<title>demand: " in section


def test_no_badge_nor_warning_when_all_is_well_and_a_known_quota(routed: WebWorld, viewer_client: Client) -> None:
    Node.objects.filter(name="node-b").update(subnet_id="subnet-public")
    RegionFacts.objects.filter(region="us-east-1").update(eip_quota=5, eip_quota_source="service-quotas")
    section = _section(viewer_client)
    assert 'id="below-min-free"' not in section and 'id="egress-warning"' not in section
    assert "limit 5 · allocated 2 · available" in _part(section, "capacity-quota")


def test_the_allowlist_to_copy_and_to_download_is_the_apis_list(routed: WebWorld, viewer_client: Client) -> None:
    api = viewer_client.get("/api/v1/launch-specs/egress/egress-ips", {"format": "txt"}).content.decode()
    assert api == "203.0.113.1\n203.0.113.2\n"
    section = _section(viewer_client)
    copy = re.search(r'<button[^>]*id="allowlist-copy"[^>]*>', section)
    assert copy and html.unescape(re.search(r'data-copy="([^"]*)"', copy[0])[1]) == api  # type: ignore[index]
    assert html.unescape(_part(section, "allowlist")).count("203.0.113.") == 2
    download = viewer_client.get("/launch-specs/egress/egress-ips.txt")
    assert download.status_code == 200 and download.content.decode() == api
    assert download["Content-Disposition"] == 'attachment; filename="egress-egress-ips.txt"'
    assert 'href="/launch-specs/egress/egress-ips.txt" download' in section


def test_the_section_polls_on_its_own_and_the_live_part_without_it(routed: WebWorld, viewer_client: Client) -> None:
    capacity = viewer_client.get(PAGE, headers=CAPACITY_POLL).content.decode()
    assert capacity.lstrip().startswith("<section") or 'id="spec-capacity"' in capacity
    assert 'id="spec-capacity"' in capacity and 'id="spec-live"' not in capacity and "<html" not in capacity
    live = viewer_client.get(PAGE, headers={"HX-Request": "true", "HX-Target": "spec-live"}).content.decode()
    assert 'id="spec-live"' in live and 'id="spec-capacity"' not in live


def test_the_chart_follows_the_chosen_range(routed: WebWorld, viewer_client: Client) -> None:
    week = _section(viewer_client, range="7d")
    assert "Demand versus pool size, last 7 d" in week and 'href="?range=7d" class="btn btn-small" aria-current' in week
    odd = _section(viewer_client, range="1y")
    assert "Demand versus pool size, last 24 h" in odd


def test_the_section_reads_no_row_per_node(routed: WebWorld, viewer_client: Client) -> None:
    def queries() -> int:
        cache.clear()  # the worse case: nothing of the history kept yet
        with CaptureQueriesContext(connection) as captured:
            assert viewer_client.get(PAGE, headers=CAPACITY_POLL).status_code == 200
        return len(captured)

    few = queries()
    for index in range(30):
        make_node(f"node-nat-{index}", spec=routed.spec, index=100 + index, state=Node.State.WAITING,
                  subnet_id="subnet-private")
    assert queries() == few
    section = _section(viewer_client)
    assert "Egress not through the EIP: 31 nodes." in section


def test_the_section_shows_a_write_at_its_next_poll(routed: WebWorld, viewer_client: Client) -> None:
    before = _section(viewer_client)
    assert 'data-field="peak7d">2<' in before and 'data-field="pool">2<' in before
    make_node("node-c", spec=routed.spec, index=3, state=Node.State.WAITING)
    make_eip(10)
    after = _section(viewer_client, range="30d")
    assert 'data-field="peak7d">3<' in after and 'data-field="pool">3<' in after
    assert "<title>demand: 3" in after


def test_the_node_page_says_its_egress_path_and_warns_when_it_bypasses_the_eip(
        routed: WebWorld, viewer_client: Client) -> None:
    nat = _part(viewer_client.get("/nodes/prod/node-b/").content.decode(), "node-egress")
    assert 'data-via="nat"' in nat and "not through its EIP" in nat and "text-warn" in nat
    assert "Egress leaves through nat-0b2 (198.51.100.7), the EIP only carries inbound" in nat
    public = _part(viewer_client.get("/nodes/prod/node-a/").content.decode(), "node-egress")
    assert "internet gateway igw-0a1: the EIP carries it" in public and "badge" not in public
    Node.objects.filter(name="node-a").update(subnet_id="subnet-unread")
    unknown = _part(viewer_client.get("/nodes/prod/node-a/").content.decode(), "node-egress")
    assert "not read yet" in unknown and "badge" not in unknown
