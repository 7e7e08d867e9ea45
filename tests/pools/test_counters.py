"""The dashboard's cheap numbers agree with a plain recount over every row, whatever happened.

pool_stats_list reads live rows by index in two queries, and event_counts_by_kind reads the counts the
database triggers keep (pools.models.EventCount): both are checked here against a recount in Python over
every row, after the real engine assigned, released (a node gone), drained and moved EIPs by hand. CI runs
this file on SQLite and on PostgreSQL (DATABASE_URL), where the triggers differ.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from django.db import connection
from django.test import Client
from django.utils import timezone

from pools import selectors
from pools.models import Assignment, ElasticIP, Event, EventCount, LaunchSpec, Node
from tests.fixtures.web import WebWorld, make_node
from tests.fixtures.world import World
from workers import executor
from workers.reassign import reassign_eip


def recount(spec: LaunchSpec) -> dict[str, int]:
    """Every number of PoolStats, counted the slow and obvious way."""
    spec = LaunchSpec.objects.select_related("cluster").get(pk=spec.pk)
    open_claims = {a.eip_id: a for a in Assignment.objects.filter(closed_at__isnull=True).select_related("node")}
    pool = [
        e for e in ElasticIP.objects.filter(gone=False)
        if e.region == spec.cluster.region and spec.tag_key in e.tags
        and (spec.tag_value is None or e.tags[spec.tag_key] == spec.tag_value)
    ]  # fmt: skip
    in_use = sum(1 for e in pool if e.pk in open_claims)
    conflict = sum(1 for e in pool if e.pk not in open_claims and e.association_id)
    nodes = [n for n in Node.objects.filter(launch_spec=spec) if n.state not in (Node.State.GONE, Node.State.RELEASED)]
    held = [a for a in open_claims.values() if a.node.launch_spec_id == spec.pk]
    return {
        "pool_size": len(pool), "in_use": in_use, "conflict": conflict, "free": len(pool) - in_use - conflict,
        "nodes": len(nodes), "waiting_nodes": sum(1 for n in nodes if n.state == Node.State.WAITING),
        "held": len(held), "draining_holding": sum(1 for a in held if a.node.draining),
    }  # fmt: skip


def stats_of(spec: LaunchSpec) -> dict[str, int]:
    row = next(r for r in selectors.pool_stats_list() if r.spec.pk == spec.pk)
    numbers = {key: getattr(row, key) for key in recount(spec)}
    single = selectors.pool_stats_get(spec=LaunchSpec.objects.select_related("cluster").get(pk=spec.pk))
    assert numbers == {key: getattr(single, key) for key in numbers}
    return numbers


def event_recount() -> dict[str, int]:
    counts = {kind: 0 for kind in Event.Kind.values}
    counts.update(Counter(Event.objects.values_list("kind", flat=True)))
    return counts


def assert_agree(*specs: LaunchSpec) -> None:
    for spec in specs:
        assert stats_of(spec) == recount(spec), spec.name
    assert selectors.event_counts_by_kind() == event_recount()


def test_counts_agree_after_assign_release_drain_and_reassign(world: World) -> None:
    spec = world.spec()
    other = world.spec("batch", labels={"pool": "batch"}, tag_value="batch")
    world.eips(3)
    world.eips(1, tags={"eipdash/pool": "batch"})
    for name in ("a", "b", "c"):
        world.node(name)
    world.node("d")  # waits: three EIPs for four nodes
    world.node("x", labels={"pool": "batch"})
    executor.reconcile_spec(spec.pk)
    executor.reconcile_spec(other.pk)
    assert_agree(spec, other)
    assert stats_of(spec)["in_use"] == 3 and stats_of(spec)["waiting_nodes"] == 1

    # A node gone: its EIP is released and goes to the waiting node.
    world.kube.delete("nodes", "c")
    executor.reconcile_spec(spec.pk)
    assert_agree(spec, other)
    executor.reconcile_spec(spec.pk)
    assert_agree(spec, other)
    assert world.eip_on("d") is not None and world.eip_on("c") is None

    # A node drains while a workload pod still runs: it keeps its EIP, counted as draining and holding.
    world.pod("web-1", "b")
    world.cordon("b")
    executor.reconcile_spec(spec.pk)
    assert_agree(spec, other)
    assert stats_of(spec)["draining_holding"] == 1

    # An operator moves a's EIP to a new node by hand.
    world.node("e")
    executor.reconcile_spec(spec.pk)
    moved = world.eip_on("a")
    assert moved is not None
    assert reassign_eip(allocation_id=moved, node_name="e", actor="alice").confirmed
    assert_agree(spec, other)
    executor.reconcile_spec(spec.pk)
    assert_agree(spec, other)


def test_event_counts_follow_every_insert_and_delete(world: World) -> None:
    """The triggers count rows however they are written: one by one, in bulk, and deleted in bulk."""
    now = timezone.now()
    Event.objects.create(timestamp=now, kind=Event.Kind.ERROR, reason="one")
    Event.objects.bulk_create(
        [Event(timestamp=now - dt.timedelta(seconds=i), kind=Event.Kind.ASSIGNED if i % 3 else Event.Kind.RELEASED)
         for i in range(300)])  # fmt: skip
    assert_agree()
    assert selectors.event_counts_by_kind()["assigned"] == 200
    Event.objects.filter(kind=Event.Kind.ASSIGNED, timestamp__lt=now - dt.timedelta(seconds=100)).delete()
    assert_agree()
    with connection.cursor() as cursor:  # raw SQL, as bench seeding and COPY write
        cursor.execute("INSERT INTO pools_event (timestamp, kind, launch_spec, cluster, region, node, instance_id, "
                       "public_ip, allocation_id, actor, reason) VALUES (%s, 'conflict', '', '', '', '', '', '', '', "
                       "'system', '')", [now])  # fmt: skip
    assert_agree()
    assert EventCount.objects.get(kind="conflict").total == 1


def test_spec_page_shows_the_first_nodes_the_count_and_a_link_to_all(
    viewer_client: Client, web_world: WebWorld
) -> None:
    """The spec page, polled every few seconds, lists its first nodes and links to /nodes/ for the rest."""
    spec = web_world.spec
    for i in range(60):
        make_node(f"node-live-{i:02d}", spec=spec, index=100 + i, state=Node.State.READY)
    for i in range(30):
        make_node(f"node-gone-{i:02d}", spec=spec, index=200 + i, state=Node.State.GONE, deleted_at=timezone.now())
    html = viewer_client.get(f"/launch-specs/{spec.name}/").content.decode()
    live = 62  # web_world's two nodes and these sixty
    # 50 rows: node-a, node-b and 48 more (each name is the text of its link to the node's page)
    assert html.count(">node-live-") == 48 and "node-gone-" not in html
    assert f"The first 50 of {live}:" in html
    assert f'href="/nodes/?spec={spec.name}"' in html
    assert selectors.pool_stats_get(spec=spec).nodes == live


def test_spec_page_shows_the_first_pool_eips_but_the_snippet_names_the_whole_pool(
    viewer_client: Client, web_world: WebWorld
) -> None:
    """The pool table is cut like the node table; the user-data snippet still lists every live pool IP."""
    from tests.fixtures.web import make_eip

    spec = web_world.spec
    for i in range(70):
        make_eip(300 + i)
    make_eip(400, gone=True)
    pool_ips = selectors.pool_public_ips(spec=spec)
    html = viewer_client.get(f"/launch-specs/{spec.name}/").content.decode()
    total = selectors.eip_list(spec=spec).count()
    assert total > 50 and f"The first 50 of {total}:" in html
    assert f'href="/eips/?spec={spec.name}"' in html
    # Every live pool IP is in the snippet (numeric order), the gone one is not.
    assert "203.0.114.144" not in pool_ips and len(pool_ips) == selectors.eip_list(spec=spec).filter(gone=False).count()
    snippet = viewer_client.get(f"/launch-specs/{spec.name}/user-data.sh").content.decode()
    assert all(ip in snippet for ip in pool_ips)
    assert [int(ip.split(".")[2]) * 256 + int(ip.split(".")[3]) for ip in pool_ips] == sorted(
        int(ip.split(".")[2]) * 256 + int(ip.split(".")[3]) for ip in pool_ips)
