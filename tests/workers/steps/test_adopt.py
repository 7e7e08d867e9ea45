"""The adopt step (workers/steps/adopt.py): AWS has an EIP on a node of the spec that the record does not say."""

from __future__ import annotations

from tests.fixtures.world import TAINT, World, open_claim, reconcile


def test_a_node_whose_eip_was_moved_away_outside_eipdash_is_tainted(world: World) -> None:
    spec = world.spec()
    (moved,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    b = world.node("b")  # waits: the pool is exhausted
    reconcile(spec)
    # Someone moves the EIP by hand, with the AWS console's "allow reassociation".
    world.ec2.client.associate_address(AllocationId=moved, NetworkInterfaceId=b.eni_id,
                                       PrivateIpAddress=b.private_ip, AllowReassociation=True)
    reconcile(spec)
    assert open_claim("b") is not None and open_claim("a") is None
    assert TAINT in world.taints("a") and TAINT not in world.taints("b")
    world.eips(1)
    reconcile(spec)
    assert world.eip_on("a") is not None and TAINT not in world.taints("a")
