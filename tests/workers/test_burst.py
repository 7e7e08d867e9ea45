"""A burst of new nodes against EC2's rate limits: the EC2 emulator behind the throttling proxy
(sandbox/aws_limits.py), which answers RequestLimitExceeded like EC2 when its buckets run dry and counts
what it served. What is asserted is the world afterwards and what the proxy saw, never timing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pytest_django.fixtures import Settings

from pools.models import Assignment, LaunchSpec
from sandbox.aws_limits import BucketSizes, LimitsProxy
from tests.fixtures.world import TAINT, World
from workers import executor, invariants


@pytest.fixture
def throttled_ec2(ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[LimitsProxy]:
    """EC2 with 20 ms per call and small buckets (12 mutating tokens, 10/s); the engine's budget mirrors them
    with 10 (two tokens of margin, like the default headroom of a 50-token bucket)."""
    sizes = BucketSizes(mutating_tokens=12, mutating_refill_per_s=10, non_mutating_tokens=100,
                        non_mutating_refill_per_s=20)
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 10, 10
    settings.EIPDASH_EC2_READ_BURST, settings.EIPDASH_EC2_READ_RATE = 80, 20
    with LimitsProxy(ec2_emulator.endpoint_url, latency_ms=20, throttle=True, sizes=sizes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)  # the engine's calls; the world's go to moto
        yield proxy


def assert_every_node_served(world: World, names: list[str]) -> None:
    held = {name: world.eip_on(name) for name in names}  # eip_on: at most one EIP per node (I3)
    assert all(held.values()), [name for name, eip in held.items() if eip is None]
    assert len(set(held.values())) == len(names)  # no EIP on two nodes (I3)
    assert not [name for name in names if TAINT in world.taints(name)]
    assert Assignment.objects.filter(closed_at__isnull=True, confirmed_at__isnull=False).count() == len(names)


def test_a_burst_of_60_nodes_gets_every_eip_concurrently_without_a_throttle(
    world: World, throttled_ec2: LimitsProxy
) -> None:
    spec = world.spec()
    world.eips(60)
    names = [world.node(f"burst-{i}").name for i in range(60)]
    for _ in range(5):
        report = executor.reconcile_spec(spec.pk)
        if not report.left and all(world.eip_on(name) for name in names):
            break
    assert not report.errors
    assert_every_node_served(world, names)
    stats = throttled_ec2.stats()
    assert stats["throttled_calls"] == 0, stats
    assert stats["calls"]["AssociateAddress"] == 60  # one each: no retries, no second association
    assert stats["max_in_flight"] > 1  # the associations ran concurrently
    # The whole promise, read back from AWS, Kubernetes and the record (I1–I4).
    observation = invariants.observe()
    assert observation.violations == []


def test_passes_that_reach_their_deadline_follow_each_other_until_the_burst_is_served(
    world: World, throttled_ec2: LimitsProxy, settings: Settings, eager_tasks: None
) -> None:
    """Each pass does one slice (its deadline is 0), leaves the rest in report.left, and the task enqueues
    the next pass at once (eager here: in this process) instead of waiting for the beat."""
    from workers import tasks

    spec = world.spec()
    world.eips(24)
    names = [world.node(f"slice-{i}").name for i in range(24)]
    settings.EIPDASH_PASS_SECONDS = 0
    first = executor.reconcile_spec(spec.pk)
    assert first.left and all(line.startswith("assign ") for line in first.left)
    # Nothing half-done: every open claim is confirmed and on AWS; a claim never sent was closed with its reason.
    open_claims = Assignment.objects.filter(closed_at__isnull=True)
    assert all(claim.confirmed_at is not None for claim in open_claims)
    assert {c.eip.allocation_id for c in open_claims} == {world.eip_on(n) for n in names if world.eip_on(n)}
    assert not Assignment.objects.filter(closed_at__isnull=False).exclude(close_reason__startswith="not sent")

    tasks.reconcile_spec(spec.pk)  # one task: its follow-ups serve the rest
    assert_every_node_served(world, names)
    assert throttled_ec2.stats()["throttled_calls"] == 0
    assert LaunchSpec.objects.get(pk=spec.pk).active_alerts == []


def test_a_budget_spent_elsewhere_too_ends_in_throttles_that_are_waited_out(
    world: World, ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """Another tool of the account spends the same budget: AWS's bucket (4 tokens) holds less than the mirror
    thinks (20). The RequestLimitExceeded answers empty the mirror, the retries wait for its refill, and the
    burst is still served with one EIP per node."""
    sizes = BucketSizes(mutating_tokens=4, mutating_refill_per_s=10, non_mutating_tokens=100,
                        non_mutating_refill_per_s=20)
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 20, 10
    with LimitsProxy(ec2_emulator.endpoint_url, latency_ms=20, throttle=True, sizes=sizes) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        spec = world.spec()
        world.eips(30)
        names = [world.node(f"shared-{i}").name for i in range(30)]
        for _ in range(10):
            report = executor.reconcile_spec(spec.pk)
            if not report.left and all(world.eip_on(name) for name in names):
                break
        assert proxy.stats()["throttled_calls"] > 0  # the mirror did not know: AWS said so
        assert_every_node_served(world, names)
        assert invariants.observe().violations == []
