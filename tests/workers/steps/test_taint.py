"""The taint step (workers/steps/taint.py): a schedulable node of the spec without an EIP is tainted (I1)."""

from __future__ import annotations

from tests.fixtures.world import TAINT, World, reconcile


def test_a_schedulable_node_without_an_eip_is_tainted(world: World) -> None:
    spec = world.spec()
    world.node("plain", tainted=False)  # registered without the startup taint, and the pool is empty
    reconcile(spec)
    assert TAINT in world.taints("plain") and world.eip_on("plain") is None
