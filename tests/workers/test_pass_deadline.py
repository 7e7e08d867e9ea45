"""A pass stops itself at its deadline, between steps, and leaves the record and AWS consistent.

The Celery soft time limit cannot stop a pass (botocore turns the exception into an HTTP error and retries),
so a pass checks EIPDASH_PASS_SECONDS before each step or slice of assignments, and an EC2 call that would
wait for a budget token past it is not sent. With a deadline of 0 the pass runs its taints and exactly one
other step (or slice), which makes the stop point deterministic without timing anything.
"""

from __future__ import annotations

import pytest
from pytest_django.fixtures import Settings

from pools.models import Assignment, LaunchSpec, Node
from tests.fixtures.world import TAINT, World
from workers import executor


def assert_consistent(world: World, names: list[str]) -> None:
    """Every claim is confirmed and matches AWS; every pool EIP on a node has its claim; no half-open claim."""
    open_claims = list(Assignment.objects.filter(closed_at__isnull=True).select_related("eip", "node"))
    assert all(a.confirmed_at is not None for a in open_claims), "an unconfirmed claim was left open"
    recorded = {a.eip.allocation_id: a.node.name for a in open_claims}
    # Deleted nodes included: one whose release was left for the next pass still holds its EIP, on the record too.
    on_aws = {world.eip_on(name): name for name in world.nodes if world.eip_on(name) is not None}
    assert recorded == on_aws
    for name in names:
        # I1: a node without an EIP keeps its startup taint.
        if world.eip_on(name) is None:
            assert TAINT in world.taints(name)
            assert Node.objects.get(name=name).state == Node.State.WAITING
        else:
            assert TAINT not in world.taints(name)


def test_a_pass_at_its_deadline_stops_between_steps_and_the_next_pass_finishes(
    world: World, settings: Settings
) -> None:
    spec = world.spec()
    world.eips(6)
    names = [world.node(f"n{i}").name for i in range(6)]
    settings.EIPDASH_PASS_SECONDS = 0
    # An EC2 budget of 3 tokens that does not refill within the test: the first slice reserves the 3 (fewer than
    # its least, but no more comes before the deadline), and the next finds no token before the deadline.
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 3, 0.01

    report = executor.reconcile_spec(spec.pk)
    assert len(report.left) == 3 and all(line.startswith("assign ") for line in report.left)
    assert any("pass deadline" in error and "3 step(s) left" in error for error in report.errors)
    # The three assignments after the first slice never opened a claim: no call of a slice waits for a token.
    assert Assignment.objects.count() == 3
    assert not Assignment.objects.filter(closed_at__isnull=False).exists()
    assert_consistent(world, names)
    assert sum(world.eip_on(name) is not None for name in names) == 3
    # Not a successful pass: it did not apply its whole plan.
    assert LaunchSpec.objects.get(pk=spec.pk).last_successful_pass_at is None

    settings.EIPDASH_PASS_SECONDS = 40
    settings.EIPDASH_EC2_MUTATE_RATE = 5
    report = executor.reconcile_spec(spec.pk)
    assert report.left == [] and report.errors == []
    assert_consistent(world, names)
    assert all(world.eip_on(name) is not None for name in names)
    assert LaunchSpec.objects.get(pk=spec.pk).last_successful_pass_at is not None


def test_passes_that_keep_hitting_the_deadline_still_make_progress(world: World, settings: Settings) -> None:
    """Releases and assignments alike: each pass does one step more, and the record never lags AWS."""
    spec = world.spec()
    world.eips(3)
    names = [world.node(f"n{i}").name for i in range(3)]
    executor.reconcile_spec(spec.pk)
    assert all(world.eip_on(name) is not None for name in names)
    # Two nodes go away and two new ones come: two releases, then two assignments.
    for name in names[:2]:
        world.kube.delete("nodes", name)
    names = names[2:] + [world.node(f"m{i}").name for i in range(2)]
    settings.EIPDASH_PASS_SECONDS = 0
    for _ in range(6):
        report = executor.reconcile_spec(spec.pk)
        assert len(report.done) <= 2  # one step, and the taint-lift line of an assignment
        assert_consistent(world, names)
        if not report.left and not report.errors:
            break
    else:
        pytest.fail(f"the passes did not finish the work: {report.left}")
    assert all(world.eip_on(name) is not None for name in names)
    assert Assignment.objects.filter(closed_at__isnull=True).count() == 3
