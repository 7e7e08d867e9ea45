"""The overview tells the truth about now (pools/selectors.py's overview reads, templates/pools/partials/
_overview.html): every ongoing problem counted, alerts marked ongoing or resolved with the ongoing ones first,
each alert row a <details> holding all its fields, and the alerts below the charts."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from pools import selectors
from pools.models import Cluster, Event, LaunchSpec
from tests.fixtures.web import WebWorld, assign, make_eip, make_node, record

pytestmark = pytest.mark.django_db


def _spec(cluster: Cluster, name: str) -> LaunchSpec:
    return LaunchSpec.objects.create(name=name, cluster=cluster, labels={"role": name}, tag_key="eipdash/pool",
                                     tag_value=name, last_successful_pass_at=timezone.now())


def _exhausted(cluster: Cluster, name: str, index: int) -> LaunchSpec:
    """A pool of one EIP, held, and a node waiting for another."""
    spec = _spec(cluster, name)
    assign(make_eip(index, tags={"eipdash/pool": name}), make_node(f"{name}-1", spec=spec, index=index, state="ready"))
    make_node(f"{name}-2", spec=spec, index=index + 1, state="waiting", startup_tainted=True)
    LaunchSpec.objects.filter(pk=spec.pk).update(active_alerts=["pool_exhausted"])
    return spec


@pytest.fixture
def world(web_world: WebWorld) -> WebWorld:
    Cluster.objects.filter(pk=web_world.cluster.pk).update(kube_context="prod")
    return web_world


def test_needs_attention_counts_every_ongoing_problem(viewer_client: Client, world: WebWorld) -> None:
    _spec(world.cluster, "vpn")  # an empty pool
    _exhausted(world.cluster, "sftp", 40)
    _exhausted(world.cluster, "ftp", 50)
    LaunchSpec.objects.filter(name="egress").update(active_alerts=["node-foreign-eip:node-a"])
    problems = selectors.spec_problem_list(stats=selectors.pool_stats_list())
    assert sorted((p.spec.name, p.code) for p in problems) == [
        ("egress", "conflict"), ("ftp", "pool_exhausted"), ("sftp", "pool_exhausted"), ("vpn", "empty_pool")]

    html = viewer_client.get(reverse("overview")).content.decode()
    panel = html.split('id="problems"', 1)[1].split("</section>", 1)[0]
    assert "4 problems" in panel
    assert 'data-spec="sftp" data-problem="pool_exhausted"' in panel
    assert "1 node waits for an EIP and none is free" in panel
    assert 'data-spec="egress" data-problem="conflict"' in panel
    assert "Conflict: node node-a carries an EIP from outside the pool" in strip_tags(panel)
    assert '<span class="token">node-a</span>' in panel  # an id stays whole when the title wraps
    # An exhausted pool is not a misconfiguration: its tile says what it is.
    assert selectors.pool_stats_get(spec=LaunchSpec.objects.get(name="sftp")).status == "exhausted"


def test_alert_groups_are_ongoing_or_resolved_and_the_ongoing_come_first(world: WebWorld) -> None:
    now = timezone.now()
    spec = world.spec
    LaunchSpec.objects.filter(pk=spec.pk).update(active_alerts=["pool_exhausted"], last_reconciled_at=now)
    record(Event.Kind.POOL_EXHAUSTED, spec=spec, at=now - dt.timedelta(minutes=40),
           reason="1 node needs an EIP and the pool has 0 free (2 in the pool); waiting: node-b")
    record(Event.Kind.CONFLICT, spec=spec, node=world.nodes[0], at=now - dt.timedelta(minutes=5),
           reason="node node-a also matches launch spec(s) other")
    groups = selectors.alert_group_list(stats=selectors.pool_stats_list())
    assert [(g.kind, g.ongoing) for g in groups] == [("pool_exhausted", True), ("conflict", False)]
    resolved = groups[1]
    assert resolved.resolved_by == now and resolved.last_node == "node-a"
    assert groups[0].labels == ["pool exhausted"]


def test_an_ongoing_alert_older_than_the_window_still_shows(world: WebWorld) -> None:
    LaunchSpec.objects.filter(pk=world.spec.pk).update(active_alerts=["eip-foreign:eipalloc-1"])
    record(Event.Kind.CONFLICT, spec=world.spec, at=timezone.now() - dt.timedelta(hours=3), reason="long ago")
    (group,) = selectors.alert_group_list(stats=selectors.pool_stats_list())
    assert (group.spec_name, group.kind, group.ongoing, group.count) == ("egress", "conflict", True, 0)
    assert group.labels == ["conflict: EIP eipalloc-1 is on an instance that is not a node of this spec"]


def test_the_overview_marks_each_alert_and_keeps_every_field_in_its_row(viewer_client: Client, world: WebWorld
                                                                        ) -> None:
    now = timezone.now()
    LaunchSpec.objects.filter(pk=world.spec.pk).update(active_alerts=["pool_exhausted"], last_reconciled_at=now)
    record(Event.Kind.POOL_EXHAUSTED, spec=world.spec, at=now - dt.timedelta(minutes=40), reason="waiting: node-b")
    record(Event.Kind.CONFLICT, spec=world.spec, node=world.nodes[0], at=now - dt.timedelta(minutes=5),
           reason="node node-a also matches launch spec(s) other")
    html = viewer_client.get(reverse("overview")).content.decode()
    alerts = html.split('id="alerts"', 1)[1].split("</section>", 1)[0]
    ongoing = alerts.index('data-status="ongoing"')
    resolved = alerts.index('data-status="resolved"')
    assert ongoing < resolved  # the ongoing alert first, although its last event is older
    row = alerts[resolved:].split("</details>", 1)[0]
    text = " ".join(strip_tags(row).split())
    assert "resolved" in text and "Latest reason" in text and "node node-a also matches launch spec(s) other" in text
    # Ids in the reason stay whole (the line breaks between words), and the latest event's node has its own field.
    assert 'node <span class="token">node-a</span> also' in row
    assert 'data-field="node"' in row and ">node-a<" in row
    assert alerts.count("<details") == 2
    # The alerts sit below the charts: rows that come and go move nothing under them.
    assert html.index("Pool use, last") < html.index('id="alerts"')


def test_the_use_chart_tells_its_series_apart_and_says_where_its_data_starts(viewer_client: Client,
                                                                             world: WebWorld) -> None:
    """The sandbox's two specs, whose colours were #1B7F95 and #0072B2, are told apart by colour, dash and
    marker; each point says its value on hover; the 1 h range is drawn whole, with the start of the data."""
    for index, name in ((60, "egress-batch"), (70, "egress-web")):
        spec = _spec(world.cluster, name)
        assign(make_eip(index, tags={"eipdash/pool": name}), make_node(f"{name}-1", spec=spec, index=index))
    first = Event.objects.order_by("timestamp").first()
    assert first is not None
    data_start = timezone.now() - dt.timedelta(minutes=10)
    Event.objects.filter(pk=first.pk).update(timestamp=data_start)
    response = viewer_client.get(reverse("overview"), {"range": "1h"})
    legend = {entry.name: entry for entry in response.context["legend"]}
    batch, web = legend["egress-batch"], legend["egress-web"]
    assert batch.colour != web.colour and batch.dash != web.dash and batch.marker != web.marker
    chart = str(response.context["use_chart"])
    assert "<title>egress-web: 1 in use at " in chart
    assert f"no data before {data_start:%H:%M} UTC" in chart
    html = response.content.decode()
    assert 'style="background' not in html  # the legend's swatches are SVG, not inline styles


def test_a_resolved_alert_says_when_it_ended_and_a_damaged_end_is_no_500(viewer_client: Client,
                                                                       world: WebWorld) -> None:
    now = timezone.now()
    spec = world.spec
    record(Event.Kind.CONFLICT, spec=spec, at=now - dt.timedelta(minutes=5), reason="a conflict")
    LaunchSpec.objects.filter(pk=spec.pk).update(alerts_ended={"eip-foreign:eipalloc-1": now.isoformat()})
    (row,) = selectors.alert_group_list()
    assert row.resolved_at == now
    LaunchSpec.objects.filter(pk=spec.pk).update(alerts_ended={"eip-foreign:eipalloc-1": "garbage"})
    response = viewer_client.get(reverse("overview"))
    assert response.status_code == 200 and "resolved" in response.content.decode()
