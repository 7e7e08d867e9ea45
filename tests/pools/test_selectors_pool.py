"""pools/selectors.py on a pool's rows: pool_stats_get counts a spec's nodes as pool_stats_list does, and
pool_first_rows reads the spec page's pool once for what eip_list, its count and pool_public_ips gave."""

from __future__ import annotations

import datetime as dt
from dataclasses import astuple

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pools import selectors
from pools.models import Assignment, Cluster, LaunchSpec, Node
from tests.fixtures.web import assign, make_eip, make_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def specs(db: None) -> tuple[LaunchSpec, LaunchSpec]:
    cluster = Cluster.objects.create(name="prod", region="us-east-1")
    web = LaunchSpec.objects.create(name="web", cluster=cluster, labels={"pool": "web"}, tag_key="eipdash/pool",
                                    tag_value="egress")
    batch = LaunchSpec.objects.create(name="batch", cluster=cluster, labels={"pool": "batch"}, tag_key="eipdash/batch")
    return web, batch


def _figures(row: selectors.PoolStats) -> tuple[object, ...]:
    return astuple(row)[1:]  # every field but the spec


def test_pool_stats_get_counts_nodes_and_holders_as_pool_stats_list_does(
        specs: tuple[LaunchSpec, LaunchSpec]) -> None:
    """One spec's counts (its page, its delete page) come from its own nodes: live ones by state, and every node
    of the spec that holds an open assignment by draining flag, whatever its state, as the list counts them."""
    web, batch = specs
    eips = [make_eip(i) for i in range(1, 9)]
    ready = make_node("ready", spec=web, index=1, state=Node.State.READY)
    draining = make_node("draining", spec=web, index=2, state=Node.State.DRAINING, draining=True)
    make_node("waiting", spec=web, index=3, state=Node.State.WAITING, startup_tainted=True)
    # Ended nodes of the spec that still hold their EIP (the next pass releases them): held, not live.
    released = make_node("released", spec=web, index=4, state=Node.State.RELEASED)
    deleted = make_node("deleted", spec=web, index=5, state=Node.State.GONE, deleted_at=timezone.now())
    make_node("gone-free", spec=web, index=6, state=Node.State.GONE, deleted_at=timezone.now())
    # A node of the other spec holding an EIP claimed for this one counts for its own spec.
    other = make_node("other", spec=batch, index=7, state=Node.State.READY)
    for eip, node in zip(eips, (ready, draining, released, deleted), strict=False):
        assign(eip, node)
    moved = assign(eips[4], other)
    Assignment.objects.filter(pk=moved.pk).update(launch_spec=web)

    row = selectors.pool_stats_get(spec=web)
    assert (row.nodes, row.waiting_nodes, row.held, row.draining_holding) == (3, 1, 4, 1)
    listed = {stats.spec.pk: stats for stats in selectors.pool_stats_list()}
    assert _figures(row) == _figures(listed[web.pk])
    assert _figures(selectors.pool_stats_get(spec=batch)) == _figures(listed[batch.pk])
    assert (listed[batch.pk].nodes, listed[batch.pk].held) == (1, 1)

    # Once every holder is a live node of a spec, the list takes its other path (from the live nodes alone): the
    # same figures again.
    Assignment.objects.filter(node__in=[released, deleted]).update(closed_at=timezone.now())
    listed = {stats.spec.pk: stats for stats in selectors.pool_stats_list()}
    assert (listed[web.pk].held, listed[web.pk].draining_holding) == (2, 1)
    for spec in (web, batch):
        assert _figures(selectors.pool_stats_get(spec=spec)) == _figures(listed[spec.pk])


def test_pool_stats_list_counts_each_state_of_every_pool(specs: tuple[LaunchSpec, LaunchSpec]) -> None:
    """The pools' EIPs by state from one grouped query: assigned (an open claim), conflict (associated without
    one), free; BYOIP apart; gone, untagged and other regions' EIPs in no pool."""
    web, batch = specs
    node = make_node("ready", spec=web, index=1, state=Node.State.READY)
    assign(make_eip(1, tags={"eipdash/pool": "egress", "team": "a"}), node)
    make_eip(2, tags={"eipdash/pool": "egress", "team": "b"}, association_id="eipassoc-foreign")
    make_eip(3, tags={"eipdash/pool": "egress"}, public_ipv4_pool="ipv4pool-ec2-0123")
    make_eip(4, tags={"eipdash/pool": "egress"}, gone=True)
    make_eip(5, tags={"eipdash/pool": "other"})
    make_eip(6, tags={"eipdash/batch": ""})
    make_eip(7, tags={"eipdash/batch": "x", "eipdash/pool": "egress"})
    make_eip(8, tags={"eipdash/batch": "x"}, region="eu-west-1")
    make_eip(9, tags={})
    rows = {row.spec.name: row for row in selectors.pool_stats_list()}
    figures = {name: (row.pool_size, row.in_use, row.conflict, row.free, row.byoip) for name, row in rows.items()}
    assert figures == {"web": (4, 1, 1, 2, 1), "batch": (2, 0, 0, 2, 0)}


def test_pool_first_rows_reads_the_pool_once_in_ip_order(specs: tuple[LaunchSpec, LaunchSpec]) -> None:
    """The spec page's pool: the first rows of eip_list (numeric IP order, gone ones included, their node), the
    list's count, and the user data's IPs (pool_public_ips: the live ones), from two queries."""
    web, _batch = specs
    # 203.0.113.9 sorts before 203.0.113.10 in numbers, after it in text.
    eips = {i: make_eip(i, gone=i == 10) for i in (12, 9, 10, 2, 30)}
    make_eip(11, tags={"eipdash/pool": "other"})
    make_eip(13, region="eu-west-1")
    node = make_node("ready", spec=web, index=1, state=Node.State.READY,
                     first_seen_at=timezone.now() - dt.timedelta(hours=1))
    assign(eips[9], node)
    with CaptureQueriesContext(connection) as captured:
        pool = selectors.pool_first_rows(spec=web, size=3)
    assert len(captured) == 2
    listed = selectors.eip_list(spec=web)
    assert [eip.public_ip for eip in pool.rows] == ["203.0.113.2", "203.0.113.9", "203.0.113.10"]
    assert [(eip.pk, eip.current_node, selectors.eip_state(eip)) for eip in pool.rows] == [
        (eip.pk, eip.current_node, selectors.eip_state(eip)) for eip in listed[:3]]
    assert [eip.current_node for eip in pool.rows] == [None, "ready", None]
    assert pool.total == listed.count() == 5
    assert pool.public_ips == selectors.pool_public_ips(spec=web) == [
        "203.0.113.2", "203.0.113.9", "203.0.113.12", "203.0.113.30"]
    whole = selectors.pool_first_rows(spec=web, size=50)
    assert [eip.pk for eip in whole.rows] == [eip.pk for eip in listed]
    empty = LaunchSpec.objects.create(name="empty", cluster=web.cluster, labels={}, tag_key="nothing")
    assert selectors.pool_first_rows(spec=empty, size=3) == selectors.PoolFirstRows([], 0, [])
