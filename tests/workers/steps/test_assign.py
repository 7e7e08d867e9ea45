"""The assign step (workers/steps/assign.py) against both emulators, with the lease and the faults that the
fault campaign's SIGKILLs never produced: a worker that stops between its checks and its calls, a node whose
instance is gone while its Node object stays listed, two Node objects of one instance. Assertions read AWS,
Kubernetes and the record back."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from pools import services
from pools.locks import lease_key
from pools.models import Assignment, Node
from sandbox.kube_emulator import node_manifest
from tests.fixtures.world import LABELS, TAINT, World, open_claim, reconcile
from workers import budget
from workers.ec2 import Ec2, NotFound

REGION = "us-east-1"


def steal_lease(redis_url: str, spec_id: int) -> None:
    """Another holder takes the spec's lease, as after this one's expired during a freeze or a failover."""
    redis.Redis.from_url(redis_url).set(lease_key(spec_id), b"another-holder", px=5000)


def test_an_association_whose_lease_is_lost_while_it_waits_for_its_token_is_never_sent(
    world: World, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check comes after the wait for an EC2 budget token, right before the call is sent: a pass frozen in
    that wait while another took the spec sends nothing (it would land beside the new holder's work)."""
    spec = world.spec()
    world.eips(1)
    world.node("a")
    real_acquire = budget.acquire
    stolen: list[bool] = []

    def acquire(region: str, kind: str, **kwargs: Any) -> None:
        if kind == budget.MUTATE and not stolen:
            stolen.append(True)  # frozen while waiting for the token; the lease expired meanwhile
            steal_lease(redis_url, spec.pk)
        real_acquire(region, kind, **kwargs)

    monkeypatch.setattr(budget, "acquire", acquire)
    report = reconcile(spec)
    assert stolen
    assert world.all_associations() == {}  # never sent
    assert any("stopped" in e for e in report.errors), report.lines()
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()


def test_a_lease_lost_between_the_claims_and_the_calls_closes_the_claims(
    world: World, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LeaseLost raised in the slice's own thread (not in a call) must not leave its claims open: no call was
    sent, and an open claim would hold its EIP and its node from everyone."""
    spec = world.spec()
    world.eips(2)
    world.node("a")
    world.node("b")
    real_open = services.assignment_open
    opened: list[Assignment] = []

    def assignment_open(**kwargs: Any) -> Assignment:
        claim = real_open(**kwargs)
        opened.append(claim)
        if len(opened) == 2:
            steal_lease(redis_url, spec.pk)  # lost right after the slice's claims
        return claim

    monkeypatch.setattr(services, "assignment_open", assignment_open)
    report = reconcile(spec)
    assert len(opened) == 2 and any("stopped" in e for e in report.errors), report.lines()
    assert world.all_associations() == {}
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()


def test_two_node_objects_of_one_instance_get_one_eip(world: World) -> None:
    """A kubelet that registered again under a new name leaves its old Node object listed (NotReady): both
    name the same instance, so the same primary address. One EIP goes there, never two."""
    spec = world.spec()
    world.eips(2)
    node = world.node("ip-10-0-0-1")
    again = node_manifest("ip-10-0-0-1-again", node.instance_id, "us-east-1a", LABELS,
                          [{"key": TAINT, "value": "true", "effect": "NoSchedule"}])
    world.kube.create("nodes", again)
    for _ in range(2):
        reconcile(spec)
    found = world.ec2.client.describe_addresses(Filters=[{"Name": "network-interface-id", "Values": [node.eni_id]}])
    assert len([a for a in found["Addresses"] if a.get("AssociationId")]) == 1
    assert Assignment.objects.filter(closed_at__isnull=True).count() == 1


def test_a_node_whose_instance_was_terminated_gets_no_eip_even_with_fresh_facts(world: World) -> None:
    """A spot interruption: the instance is terminated, its Node object still listed (Ready, the kubelet's last
    word) and its row's facts fresh from the last DescribeInstances. The slice looks at its targets' instances
    right before associating: the EIP goes to the live node, never onto the dead instance."""
    spec = world.spec()
    dead = world.node("dead")
    reconcile(spec)  # dead's facts are read and kept: running, its ENI
    world.node("live")
    reconcile(spec)  # both wait: the pool is empty
    world.ec2.terminate(dead.instance_id, drop_associations=False)
    (eip,) = world.eips(1)
    for _ in range(2):
        reconcile(spec)
    assert world.eip_on("live") == eip and world.eip_on("dead") is None
    assert dead.eni_id not in world.all_associations().values()
    # Nothing about the EIP was refused: it keeps its place in the free order.
    assert not Assignment.objects.filter(close_kind=Assignment.CloseKind.REFUSED).exists()


class EniGone(Ec2):
    """AWS answers AssociateAddress with InvalidNetworkInterfaceID.NotFound: the node's ENI is gone."""

    def associate(self, **kwargs: Any) -> str:
        raise NotFound("InvalidNetworkInterfaceID.NotFound: the interface does not exist",
                       code="InvalidNetworkInterfaceID.NotFound", operation="AssociateAddress")


def test_an_eni_that_aws_no_longer_knows_is_the_nodes_fault_not_the_eips(world: World) -> None:
    spec = world.spec()
    (eip,) = world.eips(1)
    world.node("a")
    reconcile(spec, ec2=EniGone(REGION))
    claim = Assignment.objects.get(eip__allocation_id=eip)
    assert claim.closed_at is not None and claim.close_kind != Assignment.CloseKind.REFUSED
    # The node's facts are read again by the next pass, which serves it.
    assert Node.objects.get(name="a").instance_checked_at is None
    reconcile(spec)
    assert world.eip_on("a") == eip and open_claim("a") is not None
