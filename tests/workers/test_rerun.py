"""A pass sent while another holds the spec (the watch saw a new node mid-pass) is not lost: the holder's
task runs one more pass when it ends, instead of leaving the node to the next beat tick."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from pools import locks
from pools.locks import spec_lease
from tests.fixtures.world import TAINT, World
from workers import executor, tasks
from workers.reassign import reassign_eip


def a_node_arrives_during_the_pass(world: World, spec_id: int, monkeypatch: pytest.MonkeyPatch,
                                   name: str = "b") -> list[str]:
    """The node registers after the running pass read the world; the watch sends its pass, which finds the spec
    busy. Returns the busy pass's report lines once it ran."""
    real_observe = executor.observe
    skipped: list[str] = []

    def observe_then_a_node_arrives(*args: Any, **kwargs: Any) -> Any:
        observed = real_observe(*args, **kwargs)
        if not skipped:
            world.node(name)
            skipped.extend(tasks.reconcile_spec(spec_id))
        return observed

    monkeypatch.setattr(executor, "observe", observe_then_a_node_arrives)
    return skipped


def test_a_node_seen_while_its_spec_is_busy_is_served_as_soon_as_the_busy_pass_ends(
    world: World, eager_tasks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    skipped = a_node_arrives_during_the_pass(world, spec.pk, monkeypatch)
    tasks.reconcile_spec(spec.pk)  # a's pass: it never saw b
    assert skipped and "skipped" in skipped[0]
    # No beat tick ran: b holds its EIP because a's task ran one more pass when it ended.
    assert world.eip_on("a") and world.eip_on("b") and world.eip_on("a") != world.eip_on("b")
    assert TAINT not in world.taints("b")


def test_without_a_skipped_pass_no_extra_pass_runs(world: World, eager_tasks: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    passes: list[int] = []
    real_reconcile = executor.reconcile_spec
    monkeypatch.setattr(executor, "reconcile_spec", lambda spec_id, **kw: passes.append(spec_id)
                        or real_reconcile(spec_id, **kw))
    tasks.reconcile_spec(spec.pk)
    assert passes == [spec.pk] and world.eip_on("a")


def test_a_node_seen_while_manage_py_reconcile_holds_the_spec_is_served_when_it_ends(
    world: World, eager_tasks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever holds the lease (a worker's task, `manage.py reconcile`, a manual reassign) takes the rerun
    requests left meanwhile once it releases it: not only the Celery task."""
    spec = world.spec()
    world.eips(2)
    world.node("a")
    skipped = a_node_arrives_during_the_pass(world, spec.pk, monkeypatch)
    call_command("reconcile", "--spec", spec.name, stdout=io.StringIO())
    assert skipped and "skipped" in skipped[0]
    assert world.eip_on("a") and world.eip_on("b") and TAINT not in world.taints("b")


def test_a_node_seen_while_a_manual_reassign_holds_the_spec_is_served_when_it_ends(
    world: World, eager_tasks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reassign holds the lease through its follow-up pass; c registers after that pass read the world,
    and the watch's pass for it finds the spec busy. Once the reassign lets go, it sends that pass: c is served
    now, not at the next beat tick."""
    spec = world.spec()
    world.eips(1)
    world.node("a")
    world.node("b")
    tasks.reconcile_spec(spec.pk)  # a holds the one EIP, b waits
    moved = world.eip_on("a")
    world.eips(2)
    skipped = a_node_arrives_during_the_pass(world, spec.pk, monkeypatch, name="c")
    reassign_eip(allocation_id=moved or "", node_name="b", actor="alice")
    assert skipped and "skipped" in skipped[0]
    assert world.eip_on("b") == moved
    assert world.eip_on("a") and world.eip_on("c") and TAINT not in world.taints("c")


def test_a_pass_that_finds_its_spec_busy_sends_no_pass_of_its_own(
    world: World, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the holder sends the rerun, once it has released the lease: a busy pass that sent one too would
    meet the spec busy again and send another, a loop of skipped passes for as long as the holder holds it."""
    spec = world.spec()
    sent: list[int] = []
    monkeypatch.setattr(executor, "_enqueue", sent.append)
    with spec_lease(spec.pk) as lease:
        assert lease is not None
        for _ in range(3):
            assert executor.reconcile_spec(spec.pk).skipped
        assert sent == []  # requests left for the holder, nothing sent
    assert locks.take_rerun(spec.pk)  # the holder finds one request waiting
