"""Every dashboard page: renders from the record, stays within a fixed number of queries, answers htmx
polls with just its partial, and requires login."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools.models import Event, Node
from tests.fixtures.web import WebWorld, assign, make_eip, make_node, record

pytestmark = pytest.mark.django_db


def _pages(w: WebWorld) -> dict[str, str]:
    return {
        "overview": reverse("overview"),
        "spec-list": reverse("launch-spec-list"),
        "spec-detail": reverse("launch-spec-detail", args=[w.spec.name]),
        "eip-list": reverse("eip-list"),
        "eip-detail": reverse("eip-detail", args=[w.eips[0].allocation_id]),
        "node-list": reverse("node-list"),
        "history": reverse("history"),
    }


PARTIAL_IDS = {
    "overview": "overview-live",
    "spec-list": "spec-table",
    "spec-detail": "spec-live",
    "eip-list": "eip-table",
    "eip-detail": "eip-live",
    "node-list": "node-table",
    "history": "history-table",
}


@pytest.mark.parametrize("page", list(PARTIAL_IDS))
def test_anonymous_is_sent_to_login(client: Client, web_world: WebWorld, page: str) -> None:
    url = _pages(web_world)[page]
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("page", list(PARTIAL_IDS))
def test_page_renders_for_viewer_with_partial_and_fallback(
    viewer_client: Client, web_world: WebWorld, page: str
) -> None:
    url = _pages(web_world)[page]
    response = viewer_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html and "htmx.min.js" in html
    assert f'id="{PARTIAL_IDS[page]}"' in html
    # The live part polls, and a plain link stands beside it for readers without JS.
    assert 'hx-trigger="every 5s"' in html
    assert f'href="{url}"' in html


@pytest.mark.parametrize("page", list(PARTIAL_IDS))
def test_htmx_poll_gets_only_the_partial(viewer_client: Client, web_world: WebWorld, page: str) -> None:
    response = viewer_client.get(_pages(web_world)[page], headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode().strip()
    assert "<html" not in html
    assert f'id="{PARTIAL_IDS[page]}"' in html.split(">", 1)[0] or f'id="{PARTIAL_IDS[page]}"' in html[:400]


def _grow(w: WebWorld, n: int) -> None:
    """n more EIPs, nodes, assignments and events: enough that an N+1 would show in the count."""
    base = 10 + len(w.nodes) * 100
    for i in range(n):
        eip = make_eip(base + i)
        node = make_node(
            f"node-x{base + i}", spec=w.spec, index=base + i, state=Node.State.READY, eip_ready_at=timezone.now()
        )
        assign(eip, node)
        record(Event.Kind.ASSIGNED, spec=w.spec, eip=eip, node=node, reason="grow")
    w.nodes.append(node)


@pytest.mark.parametrize(
    "page,budget",
    [
        # Each budget includes the reader check (eipdash/middleware.py): one query for the user's groups.
        # Includes the grouped alerts, the charts' data start (the first event, by index) and the use
        # series' version (its spans come from the cache while that holds).
        ("overview", 11),
        ("spec-list", 8),
        # Includes the plan preview's own snapshot reads (pools/snapshot.py).
        # + the pool, read once for its size, its live IPs and its first rows' keys, then those rows' columns (the
        # table shows the first rows only: selectors.pool_first_rows). Not the Capacity section: the page shows its
        # frame, which loads it with a request of its own (test_views_capacity.py).
        ("spec-detail", 13),
        # + the count of the unmanaged EIPs (one query, whatever their number), and the user's and their
        # groups' permissions (two: may they reassign, the rows' action?)
        ("eip-list", 9),
        ("eip-detail", 9),
        ("node-list", 6),
        ("history", 5),
    ],
)
def test_query_count_does_not_grow_with_rows(
    viewer_client: Client, web_world: WebWorld, page: str, budget: int, django_assert_max_num_queries
) -> None:
    url = _pages(web_world)[page]
    _grow(web_world, 3)
    viewer_client.get(url)  # warm the session
    cache.clear()  # both requests measured without the overview's cached spans: the worse case
    with django_assert_max_num_queries(budget) as small:
        assert viewer_client.get(url).status_code == 200
    _grow(web_world, 30)
    cache.clear()
    with django_assert_max_num_queries(len(small.captured_queries)) as large:
        assert viewer_client.get(url).status_code == 200
    assert len(large.captured_queries) == len(small.captured_queries)


def test_node_list_states_filters_and_draining_pods(viewer_client: Client, web_world: WebWorld) -> None:
    make_node("node-gone", spec=web_world.spec, index=30, state=Node.State.GONE)
    Node.objects.filter(name="node-a").update(state=Node.State.DRAINING, draining=True, drain_reason="karpenter",
                                              workload_pods=2)
    response = viewer_client.get(reverse("node-list"))
    names = [node.name for node in response.context["page"].object_list]
    assert names == ["node-a", "node-b"]
    html = response.content.decode()
    assert "2 workload pods" in html and "12s" in html  # node-a's time to EIP
    assert 'title="why the node drains">karpenter</span>' in html
    assert [n.name for n in viewer_client.get(reverse("node-list"), {"state": "gone"}).context["page"].object_list] == [
        "node-gone"
    ]
    assert [
        n.name for n in viewer_client.get(reverse("node-list"), {"q": "203.0.113.1"}).context["page"].object_list
    ] == ["node-a"]


def test_eip_list_filters_and_paginates(viewer_client: Client, web_world: WebWorld) -> None:
    for i in range(60):
        make_eip(100 + i)
    first = viewer_client.get(reverse("eip-list"), {"state": "free", "spec": "egress"})
    assert first.context["page"].paginator.count == 61  # eip 2 and the 60 new ones
    assert len(first.context["page"].object_list) == 50
    second = viewer_client.get(reverse("eip-list"), {"state": "free", "spec": "egress", "page": 2})
    assert len(second.context["page"].object_list) == 11
    assert "state=free" in first.content.decode() and "page=2" in first.content.decode()
    assigned = viewer_client.get(reverse("eip-list"), {"q": "node-a"}).context["page"].object_list
    assert [e.public_ip for e in assigned] == ["203.0.113.1"]


def test_node_list_names_each_nodes_cluster_and_finds_by_it(viewer_client: Client, web_world: WebWorld) -> None:
    from pools.models import Cluster

    eu = Cluster.objects.create(name="prod-eu", region="eu-west-1")
    twin = Node.objects.get(name="node-a")
    twin.pk, twin.cluster = None, eu  # the same node name in a second cluster
    twin.save()
    listed = viewer_client.get(reverse("node-list"), {"q": "node-a"})
    html = listed.content.decode()
    assert [n.cluster.name for n in listed.context["page"].object_list] == [web_world.spec.cluster.name, "prod-eu"]
    assert '<span title="cluster">prod-eu</span>' in html
    by_cluster = viewer_client.get(reverse("node-list"), {"q": "prod-eu"}).context["page"].object_list
    assert [(n.name, n.cluster.name) for n in by_cluster] == [("node-a", "prod-eu")]


def test_eip_list_shows_the_unmanaged_eips_on_request(viewer_client: Client, web_world: WebWorld) -> None:
    from pools.models import UnmanagedAddress

    now = timezone.now()
    for ip, alloc, tags in (("198.51.100.10", "eipalloc-decoy10", {"team": "db"}),
                            ("198.51.100.9", "eipalloc-decoy9", {}),
                            ("198.51.100.200", "eipalloc-decoy200", {"Name": "bastion"})):
        UnmanagedAddress.objects.create(allocation_id=alloc, region="us-east-1", public_ip=ip, tags=tags,
                                        last_seen_at=now, instance_id="i-bastion" if tags.get("Name") else "")
    # By default the pool EIPs only, with a way to the others.
    default = viewer_client.get(reverse("eip-list"))
    assert all(e.allocation_id.startswith("eipalloc-decoy") is False for e in default.context["page"].object_list)
    html = default.content.decode()
    assert "3 more EIPs in these regions are in no launch spec" in html and "?state=unmanaged" in html
    # On request: every other EIP of the region, numerically ordered, searchable, with its state and no
    # link to a detail page (eipdash manages nothing about them).
    listed = viewer_client.get(reverse("eip-list"), {"state": "unmanaged"})
    assert [e.public_ip for e in listed.context["page"].object_list] == [
        "198.51.100.9", "198.51.100.10", "198.51.100.200"]
    html = listed.content.decode()
    assert html.count('data-state="unmanaged"') == 3 and "/eips/eipalloc-decoy9/" not in html
    assert "on i-bastion" in html and "more EIPs in these regions" not in html
    found = viewer_client.get(reverse("eip-list"), {"state": "unmanaged", "q": "bastion"})
    assert [e.allocation_id for e in found.context["page"].object_list] == ["eipalloc-decoy200"]
    newest_first = viewer_client.get(reverse("eip-list"), {"state": "unmanaged", "sort": "-ip"})
    assert newest_first.context["page"].object_list[0].public_ip == "198.51.100.200"
    # A spec filter and "unmanaged" exclude each other: an empty list that says why.
    both = viewer_client.get(reverse("eip-list"), {"state": "unmanaged", "spec": web_world.spec.name})
    assert both.context["page"].paginator.count == 0
    assert "clear the launch spec filter" in both.content.decode()


# --- Charts ---------------------------------------------------------------------------------------


def test_pool_use_chart_range_is_fitted_to_the_data_and_picked(viewer_client: Client, web_world: WebWorld) -> None:
    from pools import charts

    # web_world's record starts a few minutes ago: the default range is 1 h, not 24 h with one spike at "now".
    response = viewer_client.get(reverse("overview"))
    assert response.context["range_key"] == "1h"
    html = response.content.decode()
    assert "Pool use, last 1 h" in html and 'aria-current="true">1 h<' in html
    # Axis titles and units.
    assert ">EIPs in use</text>" in html and "time (UTC), now at the right" in html
    # The picker: a week on request, and the histogram follows the range.
    response = viewer_client.get(reverse("overview"), {"range": "7d"})
    assert response.context["range_key"] == "7d"
    assert "Time to EIP, last 7 d" in response.content.decode()
    # No line before the data starts: every point of the line lies right of the first-data marker.
    series_html = response.context["use_chart"]
    marker = float(series_html.split('class="data-start" x1="')[1].split('"')[0])
    points = series_html.split('points="')[1].split('"')[0].split()
    assert min(float(point.split(",")[0]) for point in points) >= marker - 0.1
    # A spec's colour comes from its name, not from its position among the specs.
    assert charts.spec_colour("egress") == charts.spec_colour("egress")
    legend = {entry.name: entry.colour for entry in response.context["legend"]}
    assert legend[web_world.spec.name] == charts.spec_colour(web_world.spec.name)


def test_every_chart_colour_has_3_to_1_contrast_on_white() -> None:
    from pools import charts

    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for colour in charts.PALETTE:
        assert (1.05) / (luminance(colour) + 0.05) >= 3.0, colour


# --- Accessibility basics -------------------------------------------------------------------------


def _contrast(foreground: str, background: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_badges_and_muted_text_meet_wcag_aa() -> None:
    import re
    from pathlib import Path

    css = (Path(__file__).resolve().parents[2] / "static" / "pools" / "eipdash.css").read_text()
    colours = {name: value if len(value) == 7 else "#" + "".join(2 * c for c in value[1:])
               for name, value in re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b", css)}
    pairs = [("muted", "card"), ("muted", "bg"), ("muted", "muted-bg"), ("ok", "ok-bg"), ("warn", "warn-bg"),
             ("bad", "bad-bg"), ("accent", "info-bg"), ("ink", "bg")]
    for foreground, background in pairs:
        ratio = _contrast(colours[foreground], colours[background])
        assert ratio >= 4.5, (foreground, background, round(ratio, 2))


def test_every_page_has_a_skip_link_and_a_favicon(viewer_client: Client, web_world: WebWorld) -> None:
    html = viewer_client.get(reverse("overview")).content.decode()
    assert '<a class="skip-link" href="#main">Skip to content</a>' in html and 'id="main"' in html
    assert 'rel="icon" href="/static/pools/favicon.svg"' in html


def test_inventory_sorts_by_state_spec_and_region(viewer_client: Client, web_world: WebWorld) -> None:
    from pools.selectors import eip_state

    rows = list(viewer_client.get(reverse("eip-list"), {"sort": "state"}).context["page"].object_list)
    ranks = {"free": 0, "assigned": 1, "conflict": 2, "gone": 3}
    assert [ranks[eip_state(eip)] for eip in rows] == sorted(ranks[eip_state(eip)] for eip in rows)
    assert len({eip_state(eip) for eip in rows}) > 1
    rows = list(viewer_client.get(reverse("eip-list"), {"sort": "-state"}).context["page"].object_list)
    assert [ranks[eip_state(eip)] for eip in rows] == sorted((ranks[eip_state(eip)] for eip in rows), reverse=True)
    for key in ("spec", "-spec", "region", "-region"):
        assert viewer_client.get(reverse("eip-list"), {"sort": key}).status_code == 200
    html = viewer_client.get(reverse("eip-list")).content.decode()
    assert "sort=state" in html and "sort=spec" in html and "sort=region" in html


def test_the_500_page_is_in_the_layout(rf: Any) -> None:
    from django.views.defaults import server_error

    response = server_error(rf.get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert 'data-status="500"' in html and 'href="/history/"' in html and "eipdash.css" in html
