"""History page (filters, keyset pagination), overview content and /metrics."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from pools import services
from pools.models import Event, LaunchSpec, Node
from pools.selectors import EventFilters, event_list, event_page
from pools.specfile import launch_spec_to_ocean, parse_launch_spec
from tests.fixtures.web import WebWorld, make_node, record

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def many_events(web_world: WebWorld) -> list[Event]:
    """130 events, several sharing a timestamp, so that pages split inside a run of equal timestamps."""
    rows = [
        Event(timestamp=T0 + dt.timedelta(seconds=i // 3), kind=Event.Kind.ASSIGNED if i % 2 else Event.Kind.RELEASED,
              launch_spec="egress", node=f"node-{i}", reason=f"r{i}")
        for i in range(130)
    ]  # fmt: skip
    Event.objects.bulk_create(rows)
    return list(Event.objects.filter(launch_spec="egress", reason__startswith="r"))


def test_keyset_pages_cover_every_row_once_in_order(viewer_client: Client, many_events: list[Event]) -> None:
    params = {"until": "2026-03-02T00:00:00Z"}
    expected = list(event_list(filters=EventFilters(until=T0 + dt.timedelta(days=1))).values_list("pk", flat=True))
    assert len(expected) == 130
    seen: list[int] = []
    before = ""
    for _ in range(10):
        response = viewer_client.get(reverse("history"), {**params, **({"before": before} if before else {})})
        page = response.context["page"]
        seen += [event.pk for event in page.events]
        if not page.next_cursor:
            break
        assert 'id="older"' in response.content.decode()
        before = page.next_cursor
    assert seen == expected


def test_older_pages_do_not_poll(viewer_client: Client, many_events: list[Event]) -> None:
    first = viewer_client.get(reverse("history")).content.decode()
    assert 'hx-trigger="every 5s"' in first
    cursor = event_page(filters=EventFilters(), size=50).next_cursor
    older = viewer_client.get(reverse("history"), {"before": cursor}).content.decode()
    assert 'hx-trigger="every 5s"' not in older and "Newest" in older


def test_a_broken_cursor_gives_the_first_page(viewer_client: Client, many_events: list[Event]) -> None:
    response = viewer_client.get(reverse("history"), {"before": "garbage"})
    assert response.status_code == 200 and len(response.context["page"].events) == 50


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"event": "error"}, {"error"}),
        ({"spec": "egress", "event": "released"}, {"released"}),
        ({"q": "node-7"}, {"released", "assigned"}),
    ],
)
def test_filters(viewer_client: Client, many_events, params: dict[str, str], expected: set[str]) -> None:
    record(Event.Kind.ERROR, reason="AWS said no", at=T0)
    events = viewer_client.get(reverse("history"), params).context["page"].events
    assert events and {e.kind for e in events} == expected
    if "q" in params:
        assert all("node-7" in e.node for e in events)


def test_time_filters(viewer_client: Client, many_events: list[Event]) -> None:
    events = (
        viewer_client.get(reverse("history"), {"since": "2026-03-01T03:00:10", "until": "2026-03-01T03:00:12"})
        .context["page"]
        .events
    )
    assert sorted({e.timestamp for e in events}) == [T0 + dt.timedelta(seconds=10), T0 + dt.timedelta(seconds=11)]


def test_bad_filter_shows_an_error(viewer_client: Client, many_events: list[Event]) -> None:
    html = viewer_client.get(reverse("history"), {"since": "soon"}).content.decode()
    assert "Enter a valid date/time" in html


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's query plan")
def test_history_queries_use_an_index(many_events: list[Event]) -> None:
    """A million rows stay fast only if the page is an index range scan, never a full scan and sort."""
    cursor = event_page(filters=EventFilters(), size=10).next_cursor
    for filters in (EventFilters(), EventFilters(spec="egress"), EventFilters(event="error")):
        from django.db.models import Q

        from pools.selectors import decode_cursor

        moment, number = decode_cursor(cursor)
        qs = (
            event_list(filters=filters).filter(timestamp__lte=moment).filter(Q(timestamp__lt=moment) | Q(id__lt=number))
        )
        plan = qs[:51].explain()
        assert "USING INDEX event_" in plan, plan
        assert "SCAN pools_event" not in plan, plan


# --- Overview -------------------------------------------------------------------------------------


def test_overview_shows_pool_figures_alerts_and_charts(viewer_client: Client, web_world: WebWorld) -> None:
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(active_alerts=["pool_exhausted"])
    record(Event.Kind.CONFLICT, spec=web_world.spec, eip=web_world.eips[1], reason="on a foreign instance")
    record(Event.Kind.ERROR, spec=web_world.spec, reason="old", at=timezone.now() - dt.timedelta(hours=2))
    response = viewer_client.get(reverse("overview"))
    html = response.content.decode()
    row = response.context["stats"][0]
    assert (row.pool_size, row.in_use, row.free, row.waiting_nodes, row.draining_holding) == (2, 1, 1, 1, 0)
    assert 'data-field="pool_size">2<' in html and 'data-field="waiting">1<' in html
    assert "on a foreign instance" in html and ">old<" not in html
    assert "pool_exhausted" in html
    assert html.count('<svg class="chart"') == 2
    assert "1 node" in html  # in the time-to-EIP histogram (node-a: 12 s)


# --- Metrics --------------------------------------------------------------------------------------


def test_metrics_need_login_without_a_token(client: Client, viewer_client: Client, web_world: WebWorld) -> None:
    # A scraper without a session gets 401, not a redirect to the login page.
    assert client.get("/metrics").status_code == 401
    body = viewer_client.get("/metrics").content.decode()
    assert 'eipdash_pool_size{launch_spec="egress"} 2.0' in body
    assert 'eipdash_pool_in_use{launch_spec="egress"} 1.0' in body
    assert 'eipdash_pool_free{launch_spec="egress"} 1.0' in body
    assert 'eipdash_nodes_waiting{launch_spec="egress"} 1.0' in body
    assert 'eipdash_history_events{kind="assigned"} 1.0' in body
    assert "# TYPE eipdash_events_total counter" in body


@override_settings(EIPDASH_METRICS_TOKEN="s3cret-token")
def test_metrics_with_a_token(client: Client, viewer_client: Client, web_world: WebWorld) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # With a token set, a session is not enough: scrapers and people use different doors.
    assert viewer_client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200 and b"eipdash_pool_size" in response.content


def test_healthz_is_public(client: Client, db: None) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["problems"] == []


def test_login_page_is_public(client: Client, db: None) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200 and b"Log in to eipdash" in response.content


def test_metrics_flag_a_misconfigured_spec(viewer_client: Client, web_world: WebWorld) -> None:
    from pools.models import Cluster, LaunchSpec

    # egress is configured right: its cluster names its kube context, its last pass is fresh.
    Cluster.objects.filter(pk=web_world.cluster.pk).update(kube_context="prod")
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(last_successful_pass_at=timezone.now())
    LaunchSpec.objects.create(name="typo", cluster=web_world.cluster, labels={"role": "x"}, tag_key="eipdash/pool",
                              tag_value="no-such-pool", last_successful_pass_at=timezone.now())
    body = viewer_client.get("/metrics").content.decode()
    assert 'eipdash_launch_spec_misconfigured{launch_spec="typo"} 1.0' in body
    assert 'eipdash_launch_spec_problem{launch_spec="typo",problem="empty_pool"} 1.0' in body
    assert 'eipdash_launch_spec_misconfigured{launch_spec="egress"} 0.0' in body


@override_settings(EIPDASH_IPV4_HOURLY_USD=0.005)
def test_metrics_capacity_gauges(viewer_client: Client, web_world: WebWorld) -> None:
    from pools.models import Cluster, ElasticIP, RegionFacts

    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(min_free=3)
    # One of the two pool EIPs is BYOIP: only the other is billed, 0.005 USD an hour for 730 hours.
    ElasticIP.objects.filter(pk=web_world.eips[1].pk).update(public_ipv4_pool="ipv4pool-ec2-0123456789abcdef0")
    RegionFacts.objects.create(region="us-east-1", eip_quota=7, eip_quota_source="service-quotas")
    dublin = Cluster.objects.create(name="dublin", region="eu-west-1")
    LaunchSpec.objects.create(name="far", cluster=dublin, tag_key="eipdash/pool", tag_value="far")
    body = viewer_client.get("/metrics").content.decode()
    assert 'eipdash_pool_min_free{launch_spec="egress"} 3.0' in body
    # node-a holds, node-b waits, both since 10 minutes ago.
    assert 'eipdash_pool_peak{launch_spec="egress",window="7d"} 2.0' in body
    assert 'eipdash_pool_peak{launch_spec="egress",window="30d"} 2.0' in body
    assert 'eipdash_pool_peak{launch_spec="far",window="30d"} 0.0' in body
    assert 'eipdash_pool_cost_usd_per_month{launch_spec="egress"} 3.65' in body
    assert 'eipdash_eip_quota{region="us-east-1"} 7.0' in body
    assert 'eipdash_eips_allocated{region="us-east-1"} 2.0' in body
    # The quota of a region not read yet is absent, never a guess.
    assert 'eipdash_eip_quota{region="eu-west-1"}' not in body
    assert 'eipdash_eips_allocated{region="eu-west-1"} 0.0' in body


def test_metrics_peaks_show_a_new_node_at_the_next_scrape(viewer_client: Client, web_world: WebWorld) -> None:
    peak = 'eipdash_pool_peak{launch_spec="egress",window="7d"}'
    assert f"{peak} 2.0" in viewer_client.get("/metrics").content.decode()
    assert f"{peak} 2.0" in viewer_client.get("/metrics").content.decode()  # from the cache
    make_node("node-c", spec=web_world.spec, index=3, state=Node.State.WAITING)
    assert f"{peak} 3.0" in viewer_client.get("/metrics").content.decode()


@pytest.mark.parametrize("cursor", ["9999-12-31T23:59:59-23:00_1", "0001-01-01T00:00:00+14:00_1", "garbage"])
def test_a_broken_newer_cursor_is_ignored_not_a_500(viewer_client: Client, many_events: list[Event],
                                                    cursor: str) -> None:
    response = viewer_client.get(reverse("history"), {"newer": cursor}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200


def test_configuration_events_show_on_the_page_in_both_exports_and_in_the_api(
    viewer_client: Client, web_world: WebWorld, viewer: User
) -> None:
    """An auditor asks "who widened this pool's selector, and when": the page, the CSV, the JSONL and the API's
    events list answer alike, filtered by the event kind."""
    from tests.api.conftest import api_for
    from tests.pools.test_exports import _csv, _jsonl, _stream

    spec = web_world.spec
    document = launch_spec_to_ocean(spec)
    document["launchSpec"]["elasticIpPool"]["tagSelector"].pop("tagValue")
    services.launch_spec_apply(data=parse_launch_spec(document), actor="olivia-operator")
    wanted = {"event": "spec_updated"}
    reason = f"tagValue {spec.tag_value!r} -> None"

    page = viewer_client.get(reverse("history"), wanted).content.decode()
    assert "spec updated" in page and "olivia-operator" in page and escape(reason) in page
    rows = _csv(_stream(viewer_client.get(reverse("history-export-csv"), wanted)))
    assert [(r["event"], r["launch_spec"], r["actor"], r["reason"]) for r in rows] == [
        ("spec_updated", "egress", "olivia-operator", reason)]
    lines = _jsonl(_stream(viewer_client.get(reverse("history-export-jsonl"), wanted)))
    assert [(line["event"], line["actor"], line["reason"]) for line in lines] == [
        ("spec_updated", "olivia-operator", reason)]
    api = api_for(viewer).get("/api/v1/events/", **wanted).json()["results"]
    assert [(r["event"], r["actor"], r["reason"]) for r in api] == [("spec_updated", "olivia-operator", reason)]
