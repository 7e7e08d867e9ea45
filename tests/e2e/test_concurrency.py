"""Several workers at once never put one EIP on two nodes. Runs on PostgreSQL in CI (.ci/run)."""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest
from django.db import connection

from pools.models import Assignment, LaunchSpec
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World
from workers import executor

pytestmark = pytest.mark.e2e

NODES = 20
EIPS = 15


def observe(world: World, seen: dict[str, set[str]]) -> None:
    for allocation_id, eni in world.all_associations().items():
        seen[allocation_id].add(eni)


def assert_one_to_one(world: World, seen: dict[str, set[str]]) -> None:
    # No EIP was ever seen on two ENIs (no node lost its EIP to another), and the record matches AWS.
    moved = {a: enis for a, enis in seen.items() if len(enis) > 1}
    assert not moved, f"EIPs seen on several nodes: {moved}"
    on = world.all_associations()
    assert len(set(on.values())) == len(on)
    records = {a.eip.allocation_id: a.node.eni_id
               for a in Assignment.objects.filter(closed_at__isnull=True).select_related("eip", "node")}
    assert records == on


def test_four_worker_processes_and_twenty_nodes_at_once(stack: Stack, world_tx: World) -> None:
    world = world_tx
    spec = world.spec()
    world.eips(EIPS)
    for index in range(NODES):
        world.node(f"burst-{index:02d}")
    stack.worker(concurrency=4)
    eventually(lambda: "ready" in stack.logs(), timeout=30, stack=stack, what="worker ready")
    seen: dict[str, set[str]] = defaultdict(set)
    # Every node "arrives" at once: a storm of passes for the spec, as the watch and beat would send.
    stack.enqueue_reconcile(spec.pk, times=40)

    def settled() -> bool:
        observe(world, seen)
        return len(world.all_associations()) == EIPS and Assignment.objects.filter(
            closed_at__isnull=True, confirmed_at__isnull=False).count() == EIPS

    eventually(settled, timeout=90, stack=stack, what=f"{EIPS} EIPs assigned")
    stack.enqueue_reconcile(spec.pk, times=20)
    eventually(lambda: sum(TAINT not in world.taints(n) for n in world.nodes) == EIPS, timeout=30, stack=stack,
               what="taints lifted on the served nodes")
    observe(world, seen)
    assert_one_to_one(world, seen)
    waiting = [n for n in world.nodes if world.eip_on(n) is None]
    assert len(waiting) == NODES - EIPS and all(TAINT in world.taints(n) for n in waiting)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite serialises writers; the race needs PostgreSQL")
def test_passes_racing_without_the_lock_are_stopped_by_the_claims(world_tx: World) -> None:
    """Bypass the single-flight lock on purpose: the DB constraints and AllowReassociation=False hold."""
    world = world_tx
    spec = world.spec()
    world.eips(EIPS)
    for index in range(NODES):
        world.node(f"race-{index:02d}")
    seen: dict[str, set[str]] = defaultdict(set)
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def racer() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                executor.run_pass(LaunchSpec.objects.select_related("cluster").get(pk=spec.pk), exclusive=False)
                observe(world, seen)
        except BaseException as exc:  # the thread's failure is the test's failure
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    executor.run_pass(LaunchSpec.objects.select_related("cluster").get(pk=spec.pk))  # repairs records
    observe(world, seen)
    assert_one_to_one(world, seen)
    assert len(world.all_associations()) == EIPS
