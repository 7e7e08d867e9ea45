"""Fixes of an independent review's invariant findings, each against the emulators (and the planner on plain
values): a node whose EIP left the pool is tainted in that pass (I1); a release counts the node's pods again
once it is tainted (I2); a reassign whose disassociation may have happened keeps the old node tainted (I1)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from pools.models import LaunchSpec
from pools.planner import Claim, EipView, NodeView, Plan, SpecView, plan
from pools.snapshot import planner_inputs
from tests.fixtures.world import TAINT, World
from workers import executor
from workers.apply import Executor
from workers.ec2 import Ec2, Permanent, Transient
from workers.kube import Kube
from workers.observe import observe
from workers.reassign import ReassignFailed, ReassignRefused, reassign_eip

REGION = "us-east-1"


def uncordon(world: World, node: str) -> None:
    world.kube.patch("nodes", node, {"spec": {"unschedulable": False}})


def observe_and_plan(spec: LaunchSpec, ec2: Ec2, kube: Kube) -> Plan:
    observed = observe(spec, ec2, kube)
    assert observed.pool is not None
    return plan(*planner_inputs(spec, pool=observed.pool, in_flight_since=None))


# --- 1. an EIP that left the pool ----------------------------------------------------------------------


def test_planner_taints_a_node_whose_eip_left_the_pool() -> None:
    a = NodeView(name="a", instance_id="i-1", instance_state="running", eni_id="eni-1", private_ip="10.0.0.1")
    free = EipView(allocation_id="eipalloc-2", public_ip="203.0.113.2")
    result = plan(SpecView("ingress", "pool", "ingress"), [free], [a], {"eipalloc-9": Claim(node="a")})
    (release,) = result.release
    assert release.allocation_id == "eipalloc-9" and release.retaint
    assert result.deferred == ("a",)
    # Still on the node but untagged: it now shows as a foreign EIP, which serves it; no taint.
    foreign = plan(SpecView("ingress", "pool", "ingress"), [free], [dataclasses.replace(a, foreign_eip=True)],
                   {"eipalloc-9": Claim(node="a")})
    assert not foreign.release[0].retaint
    # A disabled spec taints nothing.
    off = plan(SpecView("ingress", "pool", "ingress", enabled=False), [free], [a], {"eipalloc-9": Claim(node="a")})
    assert not off.release[0].retaint


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


# --- 3. pods scheduled between observe and the release -------------------------------------------------


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
    uncordon(world, "a")  # the drain is called off and a pod lands before the taint
    world.pod("web", "a")
    Executor(spec, ec2, kube).apply(the_plan)
    assert world.eip_on("a") == held  # I2: the pod keeps its IP
    assert TAINT in world.taints("a")  # and nothing new lands until the next pass decides
    executor.reconcile_spec(spec.pk)  # no longer draining: the next pass lifts the taint
    assert world.eip_on("a") == held and TAINT not in world.taints("a")


# --- 2. a reassign whose disassociation failed after AWS did it ----------------------------------------


class DisassociatesThenFails(Ec2):
    """The real adapter; DisassociateAddress reaches AWS, then the client sees a 5xx (retries exhausted)."""

    def disassociate(self, association_id: str) -> None:
        super().disassociate(association_id)
        raise Transient("internal error", code="InternalError", operation="DisassociateAddress")


class RefusesToDisassociate(Ec2):
    """The real adapter; AWS refuses DisassociateAddress outright (nothing changes)."""

    def disassociate(self, association_id: str) -> None:
        raise Permanent("not authorized", code="UnauthorizedOperation", operation="DisassociateAddress")


def test_a_reassign_whose_disassociation_may_have_happened_keeps_the_old_node_tainted(world: World) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    executor.reconcile_spec(spec.pk)
    world.node("b")
    executor.reconcile_spec(spec.pk)  # b waits: the pool is exhausted
    assert TAINT not in world.taints("a")
    with pytest.raises(ReassignFailed, match="may have been moved"):
        reassign_eip(allocation_id=eip_id, node_name="b", actor="alice", ec2=DisassociatesThenFails(REGION))
    assert world.eip_on("a") is None
    assert TAINT in world.taints("a")  # I1: not schedulable without its EIP
    executor.reconcile_spec(spec.pk)  # the next pass settles it: the free EIP goes to the oldest waiting node
    served = [n for n in ("a", "b") if world.eip_on(n) == eip_id]
    assert len(served) == 1
    for name in ("a", "b"):
        assert (TAINT in world.taints(name)) == (world.eip_on(name) is None)


def test_a_refused_reassign_lifts_the_taint_again_when_aws_still_shows_the_eip(world: World) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    executor.reconcile_spec(spec.pk)
    world.node("b")
    executor.reconcile_spec(spec.pk)
    with pytest.raises(ReassignRefused, match="nothing was moved"):
        reassign_eip(allocation_id=eip_id, node_name="b", actor="alice", ec2=RefusesToDisassociate(REGION))
    assert world.eip_on("a") == eip_id and TAINT not in world.taints("a")
