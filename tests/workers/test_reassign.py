"""Manual reassign against the EC2 and Kubernetes emulators: what AWS, Kubernetes and the record show after
a move or a refusal. The web side (the request and its status) is in tests/pools/test_views_reassign.py, the
task on a real Celery worker in tests/e2e/test_reassign_worker.py."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import boto3
import pytest
from botocore.config import Config
from django.utils import timezone

from pools.models import Assignment, ElasticIP, Event, ReassignRequest
from pools.services import reassign_request_create
from tests.fixtures.world import TAINT, World, kinds, reconcile
from workers import executor
from workers.ec2 import Address, Ec2, Permanent, Transient
from workers.reassign import ReassignFailed, ReassignRefused, expire_stale_requests, reassign_eip, run_request

REGION = "us-east-1"


def test_moves_the_eip_retaints_the_old_node_and_serves_it_from_the_pool(world: World) -> None:
    spec = world.spec()
    (moved_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    reconcile(spec)  # b waits: the pool is exhausted
    outcome = reassign_eip(allocation_id=moved_id, node_name="b", actor="alice")
    assert outcome.confirmed
    assert world.eip_on("b") == moved_id and world.eip_on("a") is None
    assert TAINT not in world.taints("b")
    # I1: a lost its EIP and no other is free, so it is not schedulable.
    assert TAINT in world.taints("a")
    assert "eipdash.io/eip" not in world.labels("a")
    (moved,) = kinds("reassigned")
    assert moved.actor == "alice" and moved.node == "b" and "from a" in moved.reason
    assert [(r.node.name, r.actor) for r in Assignment.objects.filter(closed_at__isnull=True)] == [("b", "alice")]
    # A new EIP in the pool: the next pass gives it to a and lifts a's taint.
    (fresh,) = world.eips(1)
    reconcile(spec)
    assert world.eip_on("a") == fresh and TAINT not in world.taints("a")


def test_the_pass_after_the_move_serves_the_old_node_at_once(world: World) -> None:
    spec = world.spec()
    (held,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    reconcile(spec)  # b waits
    (free,) = world.eips(1)  # tagged after the last pass: no pass has served b with it
    reassign_eip(allocation_id=held, node_name="b", actor="alice")
    assert world.eip_on("b") == held
    assert world.eip_on("a") == free and TAINT not in world.taints("a")


def test_refuses_a_target_that_holds_an_eip_or_drains(world: World) -> None:
    spec = world.spec()
    first, _second = world.eips(2)
    world.node("a")
    world.node("b")
    reconcile(spec)
    before = world.all_associations()
    with pytest.raises(ReassignRefused, match="already has an EIP"):
        reassign_eip(allocation_id=world.eip_on("a") or "", node_name="b", actor="alice")
    world.node("c")
    world.cordon("c")
    reconcile(spec)
    with pytest.raises(ReassignRefused, match="draining"):
        reassign_eip(allocation_id=first, node_name="c", actor="alice")
    assert world.all_associations() == before
    assert TAINT not in world.taints("a") and TAINT not in world.taints("b")
    assert not kinds("reassigned")


def test_refuses_to_take_a_pool_eip_off_a_non_node_instance(world: World) -> None:
    spec = world.spec()
    (bastion_eip,) = world.eips(1)
    _instance, bastion_eni, bastion_ip = world.ec2.launch_instance(az="us-east-1a")
    world.ec2.client.associate_address(AllocationId=bastion_eip, NetworkInterfaceId=bastion_eni,
                                       PrivateIpAddress=bastion_ip)
    world.node("a")
    reconcile(spec)
    with pytest.raises(ReassignRefused, match="not the primary address of a node"):
        reassign_eip(allocation_id=bastion_eip, node_name="a", actor="mallory")
    assert world.address(bastion_eip)["NetworkInterfaceId"] == bastion_eni
    assert world.eip_on("a") is None and TAINT in world.taints("a")
    assert not kinds("reassigned")


def test_refuses_an_eip_in_conflict(world: World) -> None:
    """Associated with a node of the spec outside eipdash, with no record: the pass adopts or reports it;
    a hand move meanwhile would decide on a guess."""
    spec = world.spec()
    (eip_id,) = world.eips(1)
    a = world.node("a")
    world.node("b")
    world.ec2.client.associate_address(AllocationId=eip_id, NetworkInterfaceId=a.eni_id, PrivateIpAddress=a.private_ip)
    spec.enabled = False  # no pass adopts it before the move is asked for
    spec.save()
    executor.reconcile_spec(spec.pk, dry_run=True)  # the snapshot knows the nodes and the EIP
    spec.enabled = True
    spec.save()
    with pytest.raises(ReassignRefused, match="conflict"):
        reassign_eip(allocation_id=eip_id, node_name="b", actor="alice")
    assert world.eip_on("a") == eip_id and world.eip_on("b") is None
    assert not Assignment.objects.exists()


@pytest.mark.parametrize(
    ("name", "pool_label", "tag_key", "refusal"),
    [
        ("wide", "wide", "eipdash/pool", "also selected by launch spec"),  # the same EIP in two pools
        ("other", "ingress", "other/pool", "matched by launch spec"),  # the same node in two specs
    ],
)
def test_refuses_what_two_specs_claim(world: World, name: str, pool_label: str, tag_key: str, refusal: str) -> None:
    spec = world.spec()
    world.spec(name, labels={"eipdash.io/pool": pool_label}, tag_key=tag_key, tag_value=None)
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    with pytest.raises(ReassignRefused, match=refusal):
        reassign_eip(allocation_id=eip_id, node_name="a", actor="alice")
    assert world.all_associations() == {}


def test_an_aws_failure_during_the_refresh_is_a_recorded_refusal(world: World) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    reconcile(spec)
    # The real adapter against an endpoint that refuses connections.
    dead = boto3.session.Session().client("ec2", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                          config=Config(retries={"mode": "standard", "max_attempts": 1},
                                                        connect_timeout=1, read_timeout=1))
    with pytest.raises(ReassignRefused, match="Could not read AWS and Kubernetes"):
        reassign_eip(allocation_id=eip_id, node_name="b", actor="alice", ec2=Ec2("us-east-1", client=dead))
    assert world.eip_on("a") == eip_id and TAINT not in world.taints("a")
    (error,) = kinds("error")
    assert error.actor == "alice" and "reading AWS and Kubernetes failed" in error.reason


def test_a_request_runs_to_done_and_a_refusal_leaves_aws_alone(world: World) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    reconcile(spec)
    eip = ElasticIP.objects.get(allocation_id=eip_id)
    request = reassign_request_create(eip=eip, node_name="b", actor="alice")
    run_request(request.pk)
    request.refresh_from_db()
    assert request.state == "done" and "moved to b" in request.message and request.finished_at is not None
    assert world.eip_on("b") == eip_id
    # The same request delivered twice moves nothing twice.
    assert "already handled" in run_request(request.pk)

    # Back to a, which now holds no EIP... but a is tainted and waiting; ask for a draining node instead.
    world.cordon("a")
    reconcile(spec)
    refused = reassign_request_create(eip=eip, node_name="a", actor="bob")
    run_request(refused.pk)
    refused.refresh_from_db()
    assert refused.state == ReassignRequest.State.REFUSED and "draining" in refused.message
    assert world.eip_on("b") == eip_id


def test_a_request_whose_worker_died_ends_as_failed_not_moving_for_ever(world: World) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    eip = ElasticIP.objects.get(allocation_id=eip_id)
    killed = reassign_request_create(eip=eip, node_name="a", actor="alice")
    long_ago = timezone.now() - timedelta(hours=1)
    ReassignRequest.objects.filter(pk=killed.pk).update(state="running", started_at=long_ago, created_at=long_ago)
    never_picked = reassign_request_create(eip=eip, node_name="a", actor="bob")
    ReassignRequest.objects.filter(pk=never_picked.pk).update(created_at=long_ago)
    fresh = reassign_request_create(eip=eip, node_name="a", actor="carol")
    assert expire_stale_requests() == 2
    killed.refresh_from_db()
    never_picked.refresh_from_db()
    fresh.refresh_from_db()
    assert killed.state == "failed" and "worker stopped during the move" in killed.message
    assert never_picked.state == "refused" and "No worker picked" in never_picked.message
    assert fresh.state == "pending"
    # A worker that gets the expired request late moves nothing.
    assert "already handled" in run_request(never_picked.pk)
    assert world.eip_on("a") == eip_id


def test_an_eip_moved_by_someone_else_after_the_request_is_not_moved_again(world: World) -> None:
    """Two operators ask at once for the same EIP: the second confirmed taking it off the node the page
    showed, not off the node the first one just gave it to."""
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    world.node("c")
    reconcile(spec)
    eip = ElasticIP.objects.get(allocation_id=eip_id)
    to_b = reassign_request_create(eip=eip, node_name="b", actor="alice")
    to_c = reassign_request_create(eip=eip, node_name="c", actor="bob")
    run_request(to_b.pk)
    run_request(to_c.pk)
    to_b.refresh_from_db()
    to_c.refresh_from_db()
    assert to_b.state == "done" and to_c.state == "refused" and "after you asked" in to_c.message
    assert world.eip_on("b") == eip_id and world.eip_on("c") is None and TAINT in world.taints("c")


class ReadBackFails(Ec2):
    """The real adapter, except that reading an address back after an association fails once, as when
    the worker loses AWS (or dies) right after AWS accepted the move."""

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.associated = False

    def associate(self, *, allocation_id: str, eni_id: str, private_ip: str, allow_reassociation: bool = False) -> str:
        self.associated = True
        return super().associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip,
                                 allow_reassociation=allow_reassociation)

    def get_addresses(self, allocation_ids: Iterable[str]) -> dict[str, Address]:
        if self.associated:
            self.associated = False
            raise Transient("read timed out", code="RequestTimeout", operation="DescribeAddresses")
        return super().get_addresses(allocation_ids)


def test_a_move_aws_accepted_but_not_confirmed_is_finished_by_the_next_pass_in_the_operators_name(
    world: World,
) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    reconcile(spec)
    with pytest.raises(ReassignFailed, match="AWS accepted the move"):
        reassign_eip(allocation_id=eip_id, node_name="b", actor="alice", ec2=ReadBackFails("us-east-1"))
    assert world.eip_on("b") == eip_id
    reconcile(spec)
    (adopted,) = kinds("adopted")
    assert adopted.actor == "alice" and adopted.node == "b"
    assert [(r.node.name, r.actor) for r in Assignment.objects.filter(closed_at__isnull=True)] == [("b", "alice")]
    assert TAINT not in world.taints("b") and TAINT in world.taints("a")


class SecondReadFails(Ec2):
    """The real adapter; the second region-wide read (the pass after the move) is refused."""

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.reads = 0

    def list_all_addresses(self) -> list[Address]:
        self.reads += 1
        if self.reads == 2:
            raise Permanent("not authorized", code="UnauthorizedOperation", operation="DescribeAddresses")
        return super().list_all_addresses()


def test_a_failing_follow_up_pass_is_told_and_the_move_stands(world: World) -> None:
    spec = world.spec()
    (eip_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.node("b")
    reconcile(spec)
    eip = ElasticIP.objects.get(allocation_id=eip_id)
    request = reassign_request_create(eip=eip, node_name="b", actor="alice")
    run_request(request.pk, ec2=SecondReadFails("us-east-1"))
    request.refresh_from_db()
    assert request.state == "done" and "moved to b" in request.message
    assert "The pass that serves the old node" in request.message and "UnauthorizedOperation" in request.message
    assert world.eip_on("b") == eip_id and TAINT in world.taints("a")
    assert Event.objects.filter(kind="error", reason__contains="UnauthorizedOperation").exists()


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
