"""The release step (workers/steps/release.py) against both emulators: the taint goes back on before the EIP
leaves a live node (I1), a drained node's pods are counted again once it is tainted (I2), and a reading that
may be old is checked with a fresh look before a record closes or an EIP is pulled (I4)."""

from __future__ import annotations

import dataclasses

import pytest

from pools import services
from pools.models import Assignment, LaunchSpec, Node
from tests.fixtures.world import TAINT, World, kinds, open_claim, plan_now, reconcile
from workers import executor
from workers.apply import Executor
from workers.ec2 import Address, Ec2
from workers.kube import Kube

REGION = "us-east-1"


def test_a_drain_called_off_after_the_release_leaves_the_node_tainted_not_schedulable(world: World) -> None:
    spec = world.spec()
    (only,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.pod("agent", "a", daemonset=True)  # DaemonSet pods only: idle
    world.cordon("a")
    world.node("b")
    reconcile(spec)  # a gives its EIP back
    assert world.eip_on("a") is None
    assert TAINT in world.taints("a")  # before the EIP left
    reconcile(spec)
    assert world.eip_on("b") == only
    world.uncordon("a")  # the scale-down is called off
    reconcile(spec)
    # The pool is exhausted: a waits, tainted, instead of taking pods without its IP.
    assert world.eip_on("a") is None and TAINT in world.taints("a")
    assert Node.objects.get(name="a").state == "waiting"
    # Once an EIP is free again, a is served and its taint lifted.
    world.eips(1)
    reconcile(spec)
    assert world.eip_on("a") is not None and TAINT not in world.taints("a")


@pytest.mark.parametrize("taint", ["ToBeDeletedByClusterAutoscaler", "karpenter.sh/disrupted"])
def test_an_autoscaler_that_changes_its_mind_finds_the_node_tainted(world: World, taint: str) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    marked = {"key": taint, "value": "1", "effect": "NoSchedule"}
    world.kube.patch("nodes", "a", {"spec": {"taints": [marked]}})
    reconcile(spec)
    assert world.eip_on("a") is None and set(world.taints("a")) == {taint, TAINT}
    world.kube.patch("nodes", "a", {"spec": {"taints": [t for t in world.kube.get("nodes", "a")["spec"]["taints"]
                                                        if t["key"] != taint]}})
    assert world.taints("a") == [TAINT]


class StaleOnce(Ec2):
    """The region's DescribeAddresses shows these EIPs free once (eventual consistency)."""

    def __init__(self, stale: set[str]) -> None:
        super().__init__(REGION)
        self.stale = stale

    def list_all_addresses(self) -> list[Address]:
        found = super().list_all_addresses()
        stale, self.stale = self.stale, set()
        return [dataclasses.replace(a, association_id=None, eni_id=None, private_ip=None, instance_id=None)
                if a.allocation_id in stale else a for a in found]


def test_a_stale_reading_neither_closes_the_claim_nor_adds_a_second_eip(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    n = world.node("a")
    reconcile(spec)
    held = world.eip_on("a")
    assert held is not None
    report = reconcile(spec, ec2=StaleOnce({held}))
    assert not report.errors, report.errors
    on_eni = [a for a, eni in world.all_associations().items() if eni == n.eni_id]
    assert on_eni == [held]  # no second EIP (on AWS it would have knocked the first off)
    claim = open_claim("a")
    assert claim is not None and claim.eip.allocation_id == held and claim.confirmed_at is not None
    assert not kinds("released") and TAINT not in world.taints("a")
    assert Node.objects.get(name="a").state == "ready"


def test_a_deleted_node_whose_eip_a_stale_read_shows_free_is_disassociated_in_the_same_pass(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    held = world.eip_on("a")
    assert held is not None
    world.kube.delete("nodes", "a")  # the instance lives on a moment, with the association
    reconcile(spec, ec2=StaleOnce({held}))
    assert world.address(held).get("AssociationId") is None  # not left on a node that is gone (I4)
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()
    assert [(e.node, e.reason) for e in kinds("released")] == [("a", "node deleted")]


class StaleElsewhere(Ec2):
    """DescribeAddresses shows an EIP on another ENI than where it is (an older association)."""

    def __init__(self, allocation_id: str, eni_id: str, private_ip: str) -> None:
        super().__init__(REGION)
        self.stale: tuple[str, str, str] | None = (allocation_id, eni_id, private_ip)

    def list_all_addresses(self) -> list[Address]:
        found = super().list_all_addresses()
        if self.stale is None:
            return found
        (allocation_id, eni_id, private_ip), self.stale = self.stale, None
        return [dataclasses.replace(a, association_id="eipassoc-stale", eni_id=eni_id, private_ip=private_ip)
                if a.allocation_id == allocation_id else a for a in found]


@pytest.mark.parametrize("b_drains", [False, True], ids=["adopt-on-b", "release-from-b"])
def test_a_stale_reading_elsewhere_does_not_close_a_busy_nodes_record(world: World, b_drains: bool) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    held = world.eip_on("a")
    assert held is not None
    b = world.node("b")
    if b_drains:
        world.cordon("b")  # the reading makes b a drained node holding the EIP: "release" it
    reconcile(spec, ec2=StaleElsewhere(held, b.eni_id, b.private_ip))
    claim = open_claim("a")
    assert claim is not None and claim.eip.allocation_id == held
    assert world.eip_on("a") == held and TAINT not in world.taints("a") and not kinds("adopted")
    assert Node.objects.get(name="a").state == "ready"


def test_a_contested_eip_is_released_when_its_node_drains_and_the_spec_can_be_deleted(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    assert world.eip_on("a") == allocation_id
    world.spec("any-pool", labels={"pool": "other"}, tag_value=None)  # selects the same EIP
    world.cordon("a")
    reconcile(spec)
    assert world.eip_on("a") is None and not open_claim("a")
    assert [e.node for e in kinds("released")] == ["a"]
    services.launch_spec_delete(name="ingress")
    assert not LaunchSpec.objects.filter(name="ingress").exists()


def test_a_reused_node_name_does_not_strand_the_eip_on_the_old_instances_eni(world: World) -> None:
    spec = world.spec()
    (first,) = world.eips(1)
    old = world.node("ip-10-0-0-1")
    reconcile(spec)
    world.ec2.terminate(old.instance_id, drop_associations=False)  # the EC2 emulator keeps it
    world.kube.delete("nodes", "ip-10-0-0-1")
    world.node("ip-10-0-0-1")  # same name, new instance, before any pass saw the old one go
    reconcile(spec)
    assert world.address(first).get("AssociationId") is None  # not left on a gone instance (I4)
    assert [(e.node, e.reason) for e in kinds("released")] == [
        ("ip-10-0-0-1", "node gone: its name now belongs to another instance")]
    reconcile(spec)
    assert world.eip_on("ip-10-0-0-1") == first and TAINT not in world.taints("ip-10-0-0-1")


def test_a_pod_scheduled_after_observe_keeps_the_eip_of_a_drained_node(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    executor.reconcile_spec(spec.pk)
    held = world.eip_on("a")
    assert held and TAINT not in world.taints("a")
    world.cordon("a")
    ec2, kube = Ec2(REGION), Kube()
    the_plan = plan_now(spec, ec2, kube)
    assert [r.node for r in the_plan.release] == ["a"]
    world.uncordon("a")  # the drain is called off and a pod lands before the taint
    world.pod("web", "a")
    Executor(spec, ec2, kube).apply(the_plan)
    assert world.eip_on("a") == held  # I2: the pod keeps its IP
    assert TAINT in world.taints("a")  # and nothing new lands until the next pass decides
    executor.reconcile_spec(spec.pk)  # no longer draining: the next pass lifts the taint
    assert world.eip_on("a") == held and TAINT not in world.taints("a")
