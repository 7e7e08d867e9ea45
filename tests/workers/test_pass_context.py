"""PassContext's own bookkeeping rows hold when passes run side by side without the spec's lease, as they do
without Redis (tests/e2e/test_concurrency.py races them on purpose)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from pools.models import SpecFence
from tests.fixtures.polling import eventually
from tests.fixtures.world import World
from workers.pass_context import PassContext


def another_transaction_waits_for_this_one() -> bool:
    """pg_locks, unlike pg_stat_activity, is read afresh inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks"
                       " WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))")
        return bool(cursor.fetchone()[0])


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite serialises writers; the race needs PostgreSQL")
def test_note_change_waits_out_a_pass_creating_the_same_spec_row_and_still_notes_its_number(world_tx: World) -> None:
    """The spec's SpecFence row is missing (no lease ever fenced it) and another pass is creating it: this
    pass must not fail on the duplicate key, and its later sequence number must win."""
    spec = world_tx.spec()
    ctx = PassContext(spec, ec2=None, kube=None)  # type: ignore[arg-type]  # _note_change touches neither
    created = threading.Event()
    failures: list[BaseException] = []

    def other_pass() -> None:
        try:
            with transaction.atomic():
                SpecFence.objects.create(spec_id=spec.pk, fresh_from_seq=5)
                created.set()
                eventually(another_transaction_waits_for_this_one, timeout=30, interval=0.01,
                           what="the other pass waits on this uncommitted row")
        except BaseException as exc:  # the thread's failure is the test's failure
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=other_pass)
    thread.start()
    assert created.wait(30)
    ctx._note_change(9)  # blocks on the other pass's uncommitted key until that commits
    thread.join(30)
    assert not failures, failures
    assert SpecFence.objects.get(spec_id=spec.pk).fresh_from_seq == 9
