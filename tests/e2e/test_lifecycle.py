"""The promises, end to end: real Celery worker and beat on Redis, both emulators, the test database."""

from __future__ import annotations

import pytest

from pools.models import Event
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World

pytestmark = pytest.mark.e2e


def test_lifecycle_with_worker_and_beat(stack: Stack, world_tx: World) -> None:
    world = world_tx
    spec = world.spec()
    world.eips(3)
    for name in ("n1", "n2", "n3", "n4"):
        world.node(name)
    stack.worker()
    stack.beat()

    # 3 pool EIPs, 4 nodes: 3 assigned and untainted, 1 tainted with a pool_exhausted event.
    def three_ready() -> list[str]:
        ready = [n for n in world.nodes if world.eip_on(n) and TAINT not in world.taints(n)]
        return ready if len(ready) == 3 else []

    ready = eventually(three_ready, timeout=60, stack=stack, what="3 nodes assigned and untainted")
    (waiting,) = [n for n in world.nodes if n not in ready]
    assert TAINT in world.taints(waiting) and world.eip_on(waiting) is None
    eventually(lambda: Event.objects.filter(kind="pool_exhausted", launch_spec=spec.name).exists(),
               timeout=20, stack=stack, what="pool_exhausted event")

    # Cordon a node that runs one DaemonSet pod and one workload pod: the EIP stays.
    draining = ready[0]
    held = world.eip_on(draining)
    world.pod("agent", draining, daemonset=True)
    world.pod("web", draining)
    world.cordon(draining)
    eventually(lambda: Event.objects.filter(node=draining).count() >= 2 and
               spec.nodes.filter(name=draining, workload_pods=1).exists(),
               timeout=20, stack=stack, what="the pass counted the draining node's workload pod")
    assert world.eip_on(draining) == held

    # Delete the workload pod: the EIP is released and the 4th node gets that very IP.
    world.kube.delete("pods", "web", "default")
    eventually(lambda: world.eip_on(waiting) == held and TAINT not in world.taints(waiting),
               timeout=30, stack=stack, what="the waiting node got the released IP")
    assert world.eip_on(draining) is None

    # Terminate an instance and delete its node: its EIP is released.
    gone = ready[1]
    gone_eip = world.eip_on(gone)
    world.ec2.terminate(world.nodes[gone].instance_id, drop_associations=False)  # as moto: association kept
    world.kube.delete("nodes", gone)
    eventually(lambda: world.address(gone_eip).get("AssociationId") is None, timeout=30, stack=stack,
               what="the terminated node's EIP was released")
    eventually(lambda: Event.objects.filter(kind="released", node=gone).exists(), timeout=10, stack=stack,
               what="released event")
    # Never one EIP on two nodes: the ENIs holding EIPs are all different.
    enis = list(world.all_associations().values())
    assert len(enis) == len(set(enis))
    assert not Event.objects.filter(kind="error").exists()


def test_node_watch_serves_a_new_node_without_the_beat(stack: Stack, world_tx: World) -> None:
    world = world_tx
    world.spec()
    (allocation_id,) = world.eips(1)
    stack.worker()
    stack.watch()
    eventually(lambda: "watching the nodes" in stack.logs(), timeout=20, stack=stack, what="the watch started")
    world.node("fast")
    eventually(lambda: world.eip_on("fast") == allocation_id and TAINT not in world.taints("fast"),
               timeout=20, stack=stack, what="the watch triggered a pass")
