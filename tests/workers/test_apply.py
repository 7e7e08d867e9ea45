"""The executor's steps (workers/apply.py) under how AWS and Kubernetes really behave, against both emulators.

Each test drives passes and asserts on the world (AWS, Kubernetes, the record): I1 a schedulable node of a
spec holds a pool EIP; I2 no EIP leaves a node that runs workload pods; I3 one EIP per node and one node per
EIP; I4 the record matches AWS within a pass.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from pools import services
from pools.models import Assignment, LaunchSpec, Node
from pools.planner import Plan, plan
from pools.snapshot import planner_inputs
from pools.specfile import SpecFileError
from tests.fixtures.world import TAINT, World, kinds, open_claim, reconcile
from workers import apply, executor
from workers.apply import Executor
from workers.ec2 import Address, Ec2, Permanent, Throttled
from workers.kube import Kube
from workers.observe import observe

REGION = "us-east-1"


def ip_key(world: World, allocation_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in world.address(allocation_id)["PublicIp"].split("."))


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


def test_a_schedulable_node_without_an_eip_is_tainted(world: World) -> None:
    spec = world.spec()
    world.node("plain", tainted=False)  # registered without the startup taint, and the pool is empty
    reconcile(spec)
    assert TAINT in world.taints("plain") and world.eip_on("plain") is None


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


class ForeignLandsAfterTheRead(Ec2):
    """Right after the pass's DescribeAddresses, someone associates a non-pool EIP onto a node's IP."""

    def __init__(self, land: Callable[[], None]) -> None:
        super().__init__(REGION)
        self.land: Callable[[], None] | None = land

    def list_all_addresses(self) -> list[Address]:
        found = super().list_all_addresses()
        if self.land is not None:
            self.land()
            self.land = None
        return found


def test_the_target_private_ip_is_checked_right_before_associate_address(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    n = world.node("a")
    foreign, _ = world.ec2.allocate_eip({"team": "legacy"})

    def land() -> None:
        world.ec2.client.associate_address(AllocationId=foreign, NetworkInterfaceId=n.eni_id,
                                           PrivateIpAddress=n.private_ip)

    report = reconcile(spec, ec2=ForeignLandsAfterTheRead(land))
    assert any("already carries" in line for line in report.done), report.lines()
    assert world.all_associations() == {foreign: n.eni_id}  # the pool EIP did not go on beside it
    closed = Assignment.objects.get()
    assert closed.closed_at is not None and closed.close_kind == "transient"
    assert Node.objects.get(name="a").state == "waiting" and TAINT in world.taints("a")


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


class FailingDisassociate(Ec2):
    def disassociate(self, association_id: str) -> None:
        raise Throttled("Request limit exceeded.", code="RequestLimitExceeded", operation="DisassociateAddress")


def test_a_failed_release_is_saved_as_draining_not_released(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.cordon("a")
    report = reconcile(spec, ec2=FailingDisassociate(REGION))
    assert report.errors and world.eip_on("a") == allocation_id and open_claim("a") is not None
    assert Node.objects.get(name="a").state == "draining"


class AlwaysThrottled(Ec2):
    def associate(self, **kwargs: Any) -> str:
        raise Throttled("Request limit exceeded.", code="RequestLimitExceeded", operation="AssociateAddress")


def test_a_step_that_keeps_failing_writes_one_error_event_per_episode(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    for _ in range(3):
        assert reconcile(spec, ec2=AlwaysThrottled(REGION)).errors
    assert len(kinds("error")) == 1
    reconcile(spec)  # it works: the episode is over
    assert world.eip_on("a") is not None
    spec.refresh_from_db()
    assert not [key for key in spec.active_alerts if key.startswith(apply.STEP_ALERT_PREFIX)]


def test_an_eip_freed_in_this_pass_goes_to_the_replacement_before_one_released_earlier(world: World) -> None:
    spec = world.spec()
    (earlier,) = world.eips(1)
    p = world.node("p")
    reconcile(spec)
    (now,) = world.eips(1)
    a = world.node("a")
    reconcile(spec)
    assert world.eip_on("a") == now
    world.ec2.terminate(p.instance_id)
    world.kube.delete("nodes", "p")
    reconcile(spec)  # earlier goes back to the pool, with a release time
    world.ec2.terminate(a.instance_id)  # AWS drops the association
    world.kube.delete("nodes", "a")
    world.node("b")  # a's replacement, in the very pass that sees a gone
    reconcile(spec)
    assert world.eip_on("b") == now


def test_a_throttled_attempt_does_not_demote_the_sticky_eip(world: World) -> None:
    spec = world.spec()
    (sticky,) = world.eips(1)
    p = world.node("p")
    reconcile(spec)
    world.eips(1)
    world.ec2.terminate(p.instance_id)
    world.kube.delete("nodes", "p")
    reconcile(spec)  # sticky is now the most recently released
    world.node("b")

    class ThrottledOnce(Ec2):
        def associate(self, **kwargs: Any) -> str:
            raise Throttled("Request limit exceeded.", code="RequestLimitExceeded", operation="AssociateAddress")

    reconcile(spec, ec2=ThrottledOnce(REGION))
    assert world.eip_on("b") is None
    reconcile(spec)
    assert world.eip_on("b") == sticky


def test_a_real_refusal_still_sends_the_eip_last(world: World) -> None:
    spec = world.spec()
    first, second = sorted(world.eips(2), key=lambda a: ip_key(world, a))
    world.node("n")

    class Refusing(Ec2):
        def associate(self, **kwargs: Any) -> str:
            if kwargs["allocation_id"] == first:
                raise Permanent("InvalidAddress.Mismatch", code="InvalidAddress.Mismatch",
                                operation="AssociateAddress")
            return super().associate(**kwargs)

    reconcile(spec, ec2=Refusing(REGION))
    assert Assignment.objects.get(eip__allocation_id=first).close_kind == "refused"
    reconcile(spec, ec2=Refusing(REGION))
    assert world.eip_on("n") == second


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


def test_a_disabled_spec_assigns_nothing_new_but_drains_and_can_then_be_deleted(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    reconcile(spec)
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    world.node("b")
    world.node("c", tainted=False)
    report = reconcile(spec)
    assert not report.skipped
    assert world.eip_on("b") is None and world.eip_on("c") is None
    assert TAINT not in world.taints("c")  # a disabled spec takes on nothing new, taints included
    assert not kinds("pool_exhausted")
    world.cordon("a")
    reconcile(spec)
    assert world.eip_on("a") is None and not Assignment.objects.filter(closed_at__isnull=True).exists()
    # Holding nothing, but b still waits under the startup taint: the delete is refused (nothing would lift it).
    with pytest.raises(SpecFileError, match="still waiting under the startup taint"):
        services.launch_spec_delete(name="ingress")
    world.kube.delete("nodes", "b")  # scaled away
    reconcile(spec)
    services.launch_spec_delete(name="ingress")
    assert not LaunchSpec.objects.filter(name="ingress").exists()


def observe_and_plan(spec: LaunchSpec, ec2: Ec2, kube: Kube) -> Plan:
    observed = observe(spec, ec2, kube)
    assert observed.pool is not None
    return plan(*planner_inputs(spec, pool=observed.pool))


def test_nodes_whose_eips_were_released_from_the_account_are_tainted_even_past_the_deadline(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a", tainted=False)
    world.node("b", tainted=False)
    executor.reconcile_spec(spec.pk)
    gone = [world.eip_on("a") or "", world.eip_on("b") or ""]
    assert all(gone) and TAINT not in world.taints("a") and TAINT not in world.taints("b")
    for allocation_id in gone:
        association = world.address(allocation_id)["AssociationId"]
        world.ec2.client.disassociate_address(AssociationId=association)
        world.ec2.client.release_address(AllocationId=allocation_id)
    ec2, kube = Ec2(REGION), Kube()
    the_plan = observe_and_plan(spec, ec2, kube)
    assert {r.node for r in the_plan.release} == {"a", "b"}
    # The pass is past its deadline before its first release: only the first step would run.
    Executor(spec, ec2, kube, deadline=time.monotonic() - 1).apply(the_plan)
    assert TAINT in world.taints("a") and TAINT in world.taints("b")
    assert world.eip_on("a") is None and world.eip_on("b") is None


def test_a_pod_scheduled_after_observe_keeps_the_eip_of_a_drained_node(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    executor.reconcile_spec(spec.pk)
    held = world.eip_on("a")
    assert held and TAINT not in world.taints("a")
    world.cordon("a")
    ec2, kube = Ec2(REGION), Kube()
    the_plan = observe_and_plan(spec, ec2, kube)
    assert [r.node for r in the_plan.release] == ["a"]
    world.uncordon("a")  # the drain is called off and a pod lands before the taint
    world.pod("web", "a")
    Executor(spec, ec2, kube).apply(the_plan)
    assert world.eip_on("a") == held  # I2: the pod keeps its IP
    assert TAINT in world.taints("a")  # and nothing new lands until the next pass decides
    executor.reconcile_spec(spec.pk)  # no longer draining: the next pass lifts the taint
    assert world.eip_on("a") == held and TAINT not in world.taints("a")
