"""The assign step (workers/steps/assign.py) against both emulators, with the lease and the faults that the
fault campaign's SIGKILLs never produced: a worker that stops between its checks and its calls, a node whose
instance is gone while its Node object stays listed, two Node objects of one instance. Assertions read AWS,
Kubernetes and the record back."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pools import services
from pools.locks import lease_key
from pools.models import Assignment, Node
from sandbox.aws_limits import LimitsProxy
from sandbox.kube_emulator import node_manifest
from tests.fixtures.polling import eventually
from tests.fixtures.world import LABELS, TAINT, World, open_claim, reconcile
from workers import budget
from workers.ec2 import Address, Ec2, NotFound, Permanent, Throttled

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


class ShiftedClock:
    """The assign step's monotonic clock, `ahead` seconds ahead once a test says so: a wait that lasted that
    long, without sleeping through it (the lease keeps its own clock)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


def test_a_call_whose_look_at_its_target_grew_old_in_the_token_wait_is_not_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spot interruption during a long wait for an EC2 token (a throttle emptied the bucket, or Redis does not
    answer): the slice's look, taken before the wait, said the instance runs. Once that look is older than
    LOOK_FRESH_SECONDS the call is not sent; a later slice looks again and the EIP goes to a live node."""
    from workers.steps import assign

    spec = world.spec()
    dead = world.node("dead")
    world.eips(1)
    clock = ShiftedClock()
    monkeypatch.setattr(assign, "time", clock, raising=False)
    real_acquire = budget.acquire
    interrupted: list[bool] = []

    def acquire(region: str, kind: str, **kwargs: Any) -> None:
        if kind == budget.MUTATE and not interrupted:
            interrupted.append(True)
            world.ec2.terminate(dead.instance_id, drop_associations=False)
            clock.ahead = 3.0  # the wait lasted 3 s
        real_acquire(region, kind, **kwargs)

    monkeypatch.setattr(budget, "acquire", acquire)
    report = reconcile(spec)
    assert interrupted
    assert world.all_associations() == {}  # never sent onto the dead instance
    # Left for the next pass, and said why: not "the pass deadline", which was 40 s away.
    (error,) = [e for e in report.errors if "left for the next pass" in e]
    assert error.startswith("calls not sent in time: 1 step(s)"), error
    # At least the 3 s the wait lasted: a loaded machine adds its own seconds between the look and the call.
    age = re.search(r"the look at its target is ([0-9.]+)s old", error)
    assert age is not None and float(age.group(1)) >= 3.0, error
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()
    assert not Assignment.objects.filter(close_kind=Assignment.CloseKind.REFUSED).exists()
    world.node("live")
    for _ in range(2):
        reconcile(spec)
    assert world.eip_on("live") is not None and dead.eni_id not in world.all_associations().values()


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


def ip_key(world: World, allocation_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in world.address(allocation_id)["PublicIp"].split("."))


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


def test_the_look_at_the_targets_reads_their_instances_and_addresses_at_once(
    world: World, ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slice's look (look_at_targets): its DescribeInstances and DescribeAddresses are in flight together (EC2
    behind a proxy that answers after 300 ms sees both at once), so the first call goes out one round trip sooner."""
    spec = world.spec()
    world.node("a")
    reconcile(spec)  # the node is described, and waits: the pool is empty
    (eip,) = world.eips(1)
    with LimitsProxy(ec2_emulator.endpoint_url, latency_ms=300) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)  # the pass's own client, through the proxy
        report = reconcile(spec)
        stats = proxy.stats()
    assert not report.errors, report.errors
    assert world.eip_on("a") == eip and TAINT not in world.taints("a")
    assert stats["calls"]["DescribeInstances"] == 1  # the look's: the observation reused the node's facts
    assert stats["max_in_flight"] == 2


class LookUnauthorized(Ec2):
    """DescribeInstances answers the observation, then fails: the slice's look, run in a thread of the pass."""

    def __init__(self) -> None:
        super().__init__(REGION)
        self.described = 0

    def describe_instances(self, instance_ids: Any) -> dict[str, Any]:
        self.described += 1
        if self.described > 1:
            raise Permanent("DescribeInstances: UnauthorizedOperation: You are not authorized",
                            code="UnauthorizedOperation", operation="DescribeInstances")
        return super().describe_instances(instance_ids)


def test_a_look_whose_describe_instances_fails_in_its_thread_sends_nothing_and_closes_the_claim(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    ec2 = LookUnauthorized()
    report = reconcile(spec, ec2=ec2)
    assert ec2.described == 2, report.lines()
    assert world.all_associations() == {}
    claim = Assignment.objects.get()
    assert claim.closed_at is not None and "UnauthorizedOperation" in claim.close_reason
    assert TAINT in world.taints("a")


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


class HeldBack(Ec2):
    """The AssociateAddress onto one ENI waits, before it is sent, until `until()` holds (at most 20 s)."""

    def __init__(self, eni_id: str, until: Callable[[], bool]) -> None:
        super().__init__(REGION)
        self.eni_id, self.until = eni_id, until
        self.held_until_it_held: bool | None = None

    def associate(self, **kwargs: Any) -> str:
        if kwargs["eni_id"] == self.eni_id:
            try:
                eventually(self.until, timeout=20, what="the other node of the slice is ready")
                self.held_until_it_held = True
            except AssertionError:
                self.held_until_it_held = False
        return super().associate(**kwargs)


def test_assign_slice_makes_each_node_ready_as_soon_as_its_own_association_is_confirmed(world: World) -> None:
    """Two nodes in one slice, one of whose AssociateAddress calls is slow: the other node is confirmed,
    labelled and untainted while that call is still on its way (a burst's time to EIP), not after it."""
    spec = world.spec()
    world.eips(2)
    world.node("quick")
    slow = world.node("slow")
    ec2 = HeldBack(slow.eni_id, lambda: TAINT not in world.taints("quick") and world.eip_on("quick") is not None)
    report = reconcile(spec, ec2=ec2)
    assert ec2.held_until_it_held is True, report.lines()
    # ...and the slow one is served in the same pass, once its own call returns.
    assert world.eip_on("slow") is not None and TAINT not in world.taints("slow"), report.lines()
    assert Node.objects.get(name="quick").eip_ready_at < Node.objects.get(name="slow").eip_ready_at


def test_slice_size_is_at_most_four_rounds_of_the_pool_whatever_the_budget(world: World, settings: Any) -> None:
    """With a budget far above EC2's (or none), a slice of 200 made 16 threads send calls more than 2 s after
    their look on a busy host: LOOK_FRESH_SECONDS then left most of them unsent, pass after pass."""
    from workers.pass_context import PassContext
    from workers.steps.assign import reserve_slice

    settings.EIPDASH_EC2_MUTATE_BURST = settings.EIPDASH_EC2_MUTATE_RATE = 1_000_000
    budget.reset()
    ctx = PassContext(world.spec(), Ec2(REGION), kube=None)  # type: ignore[arg-type]  # sizing reads no node
    assert reserve_slice(ctx, 1000).count == 4 * settings.EIPDASH_STEP_CONCURRENCY
    assert reserve_slice(ctx, 3).count == 3


def test_reserve_slice_counts_the_next_second_of_refill_so_the_slice_looks_while_it_comes(
    world: World, settings: Any
) -> None:
    """With the budget spent, the next slice does not wait for its tokens before its claims and its look: it
    reserves the second of refill to come (the bucket goes below zero by it), and each call waits for its own
    token, so the look at the targets runs while they come (a burst's last nodes are ready that much sooner)."""
    from workers.pass_context import PassContext
    from workers.steps.assign import REFILL_BORROW_SECONDS, reserve_slice

    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 10, 5
    budget.reset()
    while budget.available(REGION, budget.MUTATE) >= 1:
        budget.acquire(REGION, budget.MUTATE)
    ctx = PassContext(world.spec(), Ec2(REGION), kube=None)  # type: ignore[arg-type]  # sizing reads no node
    held = reserve_slice(ctx, 8)
    assert held.count >= 4  # a second of refill at 5 a second (and what came meanwhile)
    assert budget.bucket(REGION, budget.MUTATE).call(budget.LOOK).free < 0  # borrowed: nobody else spends it
    assert held.count <= 1 + REFILL_BORROW_SECONDS * settings.EIPDASH_EC2_MUTATE_RATE
    held.give_back()


def test_the_slices_of_two_specs_of_one_region_never_count_the_same_tokens(world: World, settings: Any) -> None:
    """The passes of two specs of one region (two workers, in production) share its EC2 budget. A slice is sized
    to the tokens it takes, not to those it sees: the second spec's slice is what the first left, and no claim is
    opened for a call that then waits for a token (its look at the target growing old meanwhile; at scale-out,
    1,713 claims closed that way)."""
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 10, 0.01  # no refill during the test
    settings.EIPDASH_PASS_SECONDS = 5
    budget.reset()
    specs = {g: world.spec(g, labels={"group": g}, tag_value=g) for g in "ab"}
    for g in "ab":
        world.eips(8, tags={"eipdash/pool": g})
        for i in range(8):
            world.node(f"{g}-{i}", labels={"group": g})
    reports = [reconcile(specs[g]) for g in "ab"]
    served = {g: sum(world.eip_on(f"{g}-{i}") is not None for i in range(8)) for g in "ab"}
    assert served == {"a": 8, "b": 2}, [r.lines() for r in reports]
    unsent = Assignment.objects.filter(close_kind=Assignment.CloseKind.TRANSIENT)
    assert not unsent.exists(), [c.close_reason for c in unsent]
    assert Assignment.objects.filter(closed_at__isnull=True).count() == 10  # the ten served, each confirmed
