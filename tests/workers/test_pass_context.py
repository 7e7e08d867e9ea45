"""PassContext's own bookkeeping rows hold when passes run side by side without the spec's lease, as they do
without Redis (tests/e2e/test_concurrency.py races them on purpose)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pools import services
from pools.models import SpecFence, SpecPlan
from pools.planner import Plan
from tests.fixtures.polling import another_transaction_waits_for_this_one, eventually
from tests.fixtures.world import World
from workers.pass_context import PassContext


@contextmanager
def another_pass_creating(create: Callable[[], object]) -> Iterator[None]:
    """Another pass creates a row in its transaction and holds it uncommitted until this connection waits on it
    (pg_locks), then commits: the block is this pass's side of the race."""
    created = threading.Event()
    failures: list[BaseException] = []

    def other_pass() -> None:
        try:
            with transaction.atomic():
                create()
                created.set()
                eventually(another_transaction_waits_for_this_one, timeout=30, interval=0.01,
                           what="this pass waits on the other's uncommitted row")
        except BaseException as exc:  # the thread's failure is the test's failure
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=other_pass)
    thread.start()
    assert created.wait(30)
    yield
    thread.join(30)
    assert not failures, failures


# SQLite serialises writers: two transactions never race to create one row there.
needs_postgresql = pytest.mark.skipif(connection.vendor == "sqlite", reason="the race needs PostgreSQL")


@needs_postgresql
def test_note_change_waits_out_a_pass_creating_the_same_spec_row_and_still_notes_its_number(world_tx: World) -> None:
    """The spec's SpecFence row is missing (no lease ever fenced it) and another pass is creating it: this
    pass must not fail on the duplicate key, and its later sequence number must win."""
    spec = world_tx.spec()
    ctx = PassContext(spec, ec2=None, kube=None)  # type: ignore[arg-type]  # _note_change touches neither
    with another_pass_creating(lambda: SpecFence.objects.create(spec_id=spec.pk, fresh_from_seq=5)):
        ctx._note_change(9)  # blocks on the other pass's uncommitted key until that commits
    assert SpecFence.objects.get(spec_id=spec.pk).fresh_from_seq == 9


@needs_postgresql
def test_spec_plan_store_waits_out_a_pass_creating_the_same_row_and_writes_over_it(world_tx: World) -> None:
    """The spec has no stored plan yet and another pass (no lease: passes without Redis) is storing one: this
    pass's store, inside its own transaction, must not fail on the duplicate key (the CI run of 2026-12-08 met
    it in tests/e2e/test_concurrency.py), and its plan is the one kept."""
    spec = world_tx.spec()
    other = {"lines": ["the other pass"], "planned_at": timezone.now()}
    with another_pass_creating(lambda: SpecPlan.objects.create(spec_id=spec.pk, **other)), transaction.atomic():
        # As a pass stores it: inside its (fenced) transaction, which must go on.
        stored = services.spec_plan_store(spec=spec, plan=Plan(waiting=("n1",)), eips=[], nodes=[], claims={})
        # A query after the duplicate key: on PostgreSQL it raises if the pass's transaction was left aborted.
        assert SpecPlan.objects.filter(spec_id=spec.pk).exists()
    assert stored is True
    assert SpecPlan.objects.get(spec_id=spec.pk).lines == Plan(waiting=("n1",)).describe()
