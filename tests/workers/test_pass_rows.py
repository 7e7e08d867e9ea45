"""A steady pass loads only the node rows it needs, however many deleted nodes the history keeps.

A cluster keeps a Node row (and its closed assignments) for every node it ever had. A pass must not load
them: it needs the nodes Kubernetes lists now, the nodes tied to the pool, and the deleted-but-not-yet-closed
ones. Rows loaded are counted with Django's post_init signal (sent for every model instance the ORM builds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pools.models import Assignment, ElasticIP, Node
from tests.fixtures.world import World
from workers import executor

DELETED = 10_000


@contextmanager
def node_rows_loaded() -> Iterator[list[int]]:
    loaded = [0]

    def count(sender: Any, **kwargs: Any) -> None:
        loaded[0] += 1

    post_init.connect(count, sender=Node)
    try:
        yield loaded
    finally:
        post_init.disconnect(count, sender=Node)


def add_deleted_nodes(spec: Any, count: int) -> None:
    """`count` nodes of the spec that are long gone, each with its closed assignment, as a busy cluster keeps."""
    eip = ElasticIP.objects.first()
    assert eip is not None
    gone_at = timezone.now() - dt.timedelta(days=3)
    Node.objects.bulk_create(
        [Node(cluster=spec.cluster, name=f"old-{i:05d}", instance_id=f"i-old{i:05d}", launch_spec=spec,
              state=Node.State.GONE, labels=dict(spec.labels), instance_state="terminated", eni_id=f"eni-old{i:05d}",
              private_ip="10.9.0.1", first_seen_at=gone_at, last_seen_at=gone_at, deleted_at=gone_at)
         for i in range(count)], batch_size=2000)  # fmt: skip
    Assignment.objects.bulk_create(
        [Assignment(eip=eip, node=node, launch_spec=spec, opened_at=gone_at, confirmed_at=gone_at, closed_at=gone_at,
                    close_reason="node deleted", close_kind=Assignment.CloseKind.RELEASED)
         for node in Node.objects.filter(name__startswith="old-")], batch_size=2000)  # fmt: skip


def test_a_steady_pass_does_not_load_deleted_node_rows(world: World) -> None:
    spec = world.spec()
    world.eips(4)
    for i in range(3):
        world.node(f"n{i}")
    assert not executor.reconcile_spec(spec.pk).errors
    # Steady from here: the marks the first pass put on the nodes are in their rows.
    assert executor.reconcile_spec(spec.pk).done == []
    with node_rows_loaded() as before, CaptureQueriesContext(connection) as queries_before:
        assert executor.reconcile_spec(spec.pk).done == []

    add_deleted_nodes(spec, DELETED)
    with node_rows_loaded() as after, CaptureQueriesContext(connection) as queries_after:
        report = executor.reconcile_spec(spec.pk)
    assert report.done == [] and not report.errors
    # The same rows and the same number of queries as without the history: the live nodes, a few times over.
    assert after[0] == before[0] <= 10 * 3, (before, after)
    assert len(queries_after) == len(queries_before)


def test_a_node_deleted_while_holding_its_eip_is_still_followed(world: World) -> None:
    """The rows a pass needs are still loaded: a deleted node whose EIP is not yet released."""
    spec = world.spec()
    world.eips(2)
    world.node("keep")
    world.node("leaving")
    executor.reconcile_spec(spec.pk)
    add_deleted_nodes(spec, 1000)
    world.kube.delete("nodes", "leaving")
    report = executor.reconcile_spec(spec.pk)
    assert any(line.startswith("released") and "from leaving" in line for line in report.done), report.done
    assert world.eip_on("leaving") is None and world.eip_on("keep") is not None
    assert not Assignment.objects.filter(node__name="leaving", closed_at__isnull=True).exists()
