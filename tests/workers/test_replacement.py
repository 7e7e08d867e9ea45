"""A node name re-registered on a new instance (EKS reuses ip-… names) while eipdash serves the old one.

The writes for one node check the instance behind the name (workers/kube.py), and a claim made for the
name's previous instance is never kept as a "stale reading" (pools/planner.py, workers/apply.py): the EIP
goes back from the dead instance's ENI and the new instance is served as a new node. Everything runs
against the EC2 and Kubernetes emulators; the assertions read AWS, Kubernetes and the record back.
"""

from __future__ import annotations

from dataclasses import replace as replace_fields
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError

from pools.keys import EIP_LABEL
from pools.models import Assignment
from tests.fixtures.world import TAINT, World
from tests.fixtures.world import TestNode as WorldNode
from workers.ec2 import Address, Ec2, Instance
from workers.executor import run_pass
from workers.kube import Kube


def violations() -> list[str]:
    """check_invariants' findings (I1…I4 lines), empty when the world is clean."""
    out = StringIO()
    try:
        call_command("check_invariants", "--grace", "0", stdout=out)
    except CommandError:
        pass
    return [line for line in out.getvalue().splitlines() if line[:2] in ("I1", "I2", "I3", "I4")]


def replace(world: World, old: WorldNode) -> WorldNode:
    """The old instance terminates (the emulator keeps its association, as moto does) and the same node
    name registers again on a new instance, with the startup taint."""
    world.ec2.terminate(old.instance_id, drop_associations=False)
    world.kube.delete("nodes", old.name)
    return world.node(old.name)


class StaleAddresses(Ec2):
    """The region-wide DescribeAddresses shows these EIPs free (an eventually consistent reading); the
    targeted DescribeAddresses of the executor's re-read shows where they are."""

    def __init__(self, *args: Any, hide: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hide = hide

    def list_all_addresses(self) -> list[Address]:
        return [replace_fields(a, association_id=None, eni_id=None, private_ip=None, instance_id=None)
                if a.allocation_id in self.hide else a for a in super().list_all_addresses()]


def serve_then_replace(world: World) -> tuple[str, WorldNode, WorldNode]:
    """A node served and confirmed, then replaced under the same name: the open claim is the old one's."""
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    old = world.node("ip-10-0-0-9")
    run_pass(spec)
    assert world.eip_on(old.name) == allocation_id
    new = replace(world, old)
    return allocation_id, old, new


def test_a_node_replaced_mid_pass_is_served_as_a_new_node(world: World) -> None:
    """The replacement lands between the association and the first Kubernetes write for the node: the
    new node keeps its taint and gets no label; the next pass takes the EIP back from the dead instance;
    the one after serves the new node, with the same IP."""
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    old = world.node("ip-10-0-0-9")
    replaced: list[WorldNode] = []

    class Replacing(Kube):
        def set_eip_marks(self, node_name: str, **kwargs: Any) -> None:
            if not replaced:
                replaced.append(replace(world, old))
            super().set_eip_marks(node_name, **kwargs)

        def mark_ready(self, node_name: str, **kwargs: Any) -> bool:  # marks and taint in one patch
            if not replaced:
                replaced.append(replace(world, old))
            return super().mark_ready(node_name, **kwargs)

    report = run_pass(spec, ec2=Ec2("us-east-1"), kube=Replacing())

    (new,) = replaced
    assert world.address(allocation_id).get("NetworkInterfaceId") == old.eni_id  # on the dead instance
    assert world.taints(new.name) == [TAINT] and EIP_LABEL not in world.labels(new.name)
    assert any("did not mark ip-10-0-0-9 ready" in line for line in report.done), report.lines()
    assert [line for line in violations() if line.startswith("I1")] == []

    run_pass(spec)

    assert world.address(allocation_id).get("AssociationId") is None
    claims = Assignment.objects.filter(eip__allocation_id=allocation_id)
    assert [(c.eni_id, c.closed_at is not None) for c in claims] == [(old.eni_id, True)]
    assert world.taints(new.name) == [TAINT]
    assert violations() == []

    run_pass(spec)

    assert world.eip_on(new.name) == allocation_id
    assert world.taints(new.name) == [] and world.labels(new.name)[EIP_LABEL] == world.address(
        allocation_id)["PublicIp"]
    assert violations() == []


def test_a_stale_reading_does_not_keep_the_claim_of_a_replaced_node(world: World) -> None:
    """The region-wide reading shows the EIP free, the re-read shows it on the claim's ENI: for a node
    that is still the same instance that is a stale reading and the claim is kept; here the ENI is the
    previous instance's, so the EIP is taken off it and the claim closed."""
    allocation_id, old, new = serve_then_replace(world)
    spec = world.spec()

    report = run_pass(spec, ec2=StaleAddresses("us-east-1", hide={allocation_id}))

    assert not any("stale reading" in line for line in report.done), report.lines()
    assert world.address(allocation_id).get("AssociationId") is None
    claim = Assignment.objects.get(eip__allocation_id=allocation_id)
    assert (claim.eni_id, claim.closed_at is not None, claim.close_kind) == (old.eni_id, True, "released")
    assert world.taints(new.name) == [TAINT]

    run_pass(spec)

    assert world.eip_on(new.name) == allocation_id and world.taints(new.name) == []
    assert violations() == []


def test_the_reread_tells_a_replaced_node_by_its_instance(world: World) -> None:
    """EC2 does not list the new instance yet (no ENI known for it) and the region-wide reading shows the
    EIP free: only the re-read's instance id tells that the claim's ENI is the previous instance's."""
    allocation_id, old, new = serve_then_replace(world)
    spec = world.spec()

    class NewInstanceUnlisted(StaleAddresses):
        def describe_instances(self, instance_ids: Any) -> dict[str, Instance]:
            return {i: found for i, found in super().describe_instances(instance_ids).items() if i != new.instance_id}

    report = run_pass(spec, ec2=NewInstanceUnlisted("us-east-1", hide={allocation_id}))

    assert not any("stale reading" in line for line in report.done), report.lines()
    assert world.address(allocation_id).get("AssociationId") is None
    assert Assignment.objects.get(eip__allocation_id=allocation_id).closed_at is not None
    assert world.taints(new.name) == [TAINT]
