"""The executor's steps (workers/apply.py) under how AWS and Kubernetes really behave, against both emulators.

Each test drives passes and asserts on the world (AWS, Kubernetes, the record): I1 a schedulable node of a
spec holds a pool EIP; I2 no EIP leaves a node that runs workload pods; I3 one EIP per node and one node per
EIP; I4 the record matches AWS within a pass.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pools import services
from pools.alerts import Alert, alert_name
from pools.models import Assignment, LaunchSpec, Node
from pools.specfile import SpecFileError
from tests.fixtures.world import TAINT, World, kinds, open_claim, plan_now, reconcile
from workers import executor
from workers.apply import Executor
from workers.ec2 import Ec2, Throttled
from workers.kube import Kube

REGION = "us-east-1"


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
    assert not [key for key in spec.active_alerts if alert_name(key) is Alert.STEP_FAILED]


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
    the_plan = plan_now(spec, ec2, kube)
    assert {r.node for r in the_plan.release} == {"a", "b"}
    # The pass is past its deadline before its first release: only the first step would run.
    Executor(spec, ec2, kube, deadline=time.monotonic() - 1).apply(the_plan)
    assert TAINT in world.taints("a") and TAINT in world.taints("b")
    assert world.eip_on("a") is None and world.eip_on("b") is None




def test_the_pass_that_no_longer_sees_an_alert_records_when_it_ended(world: World) -> None:
    """The overview marks a resolved alert with when it ended: the record kept only when alerts start."""
    from pools import selectors

    spec = world.spec()
    world.eips(1)
    world.node("a")
    world.node("b")
    reconcile(spec)  # b waits: the pool is exhausted
    spec.refresh_from_db()
    assert "pool_exhausted" in spec.active_alerts and spec.alerts_ended == {}
    world.eips(1)
    reconcile(spec)  # b gets the new EIP: the alert ends with this pass
    spec.refresh_from_db()
    assert spec.active_alerts == [] and set(spec.alerts_ended) == {"pool_exhausted"}
    (row,) = [row for row in selectors.alert_group_list() if row.kind == "pool_exhausted"]
    assert not row.ongoing and row.resolved_at == spec.last_reconciled_at
