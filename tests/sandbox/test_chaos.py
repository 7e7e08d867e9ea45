"""The fault campaign's own helpers (the campaign itself runs in tests/e2e/test_chaos.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from pools.models import Event

pytestmark = pytest.mark.django_db


def test_history_of_lists_the_events_of_the_eips_and_nodes_a_violation_names() -> None:
    """A failed campaign in CI leaves no state directory behind: its output says what the engine did."""
    from sandbox.chaos import history_of

    at = timezone.now()
    for n, (kind, ip, node) in enumerate([("assigned", "127.0.0.9", "i-0a.ec2.internal"),
                                          ("released", "127.0.0.9", "i-0a.ec2.internal"),
                                          ("assigned", "127.0.0.7", "i-0b.ec2.internal"),
                                          ("taint_lifted", "", "i-0a.ec2.internal")]):
        Event.objects.create(timestamp=at + dt.timedelta(seconds=n), kind=kind, public_ip=ip, node=node,
                             reason=f"step {n}")

    lines = history_of(["I4 open record of 127.0.0.9 on i-0a.ec2.internal is for ENI eni-1"])
    assert lines[0].startswith("history of what they name")
    assert [line.rsplit(": ", 1)[1] for line in lines[1:]] == ["step 0", "step 1", "step 3"]  # oldest first
    assert history_of(["I3 something without an address or a node name"]) == []


def test_a_restarted_worker_serves_only_once_celery_says_ready_so_the_other_is_left_alone() -> None:
    """Found in CI under load: a killed worker took longer than RESTART_SECONDS to start again, the other was
    frozen meanwhile, no pass ran for 30 s, and the checker reported the I4 finding nobody could repair."""
    from sandbox.chaos import CELERY_READY, RESTART_SECONDS, Worker, disturbable
    from sandbox.run import Child

    def worker(name: str) -> Worker:
        return Worker(name, False, Child(name, [], None, "1", ready_when=CELERY_READY))  # type: ignore[arg-type]

    restarted, other = worker("worker"), worker("worker-skewed")
    other.child.ready.set()
    restarted.disturbed_until = 100.0
    now = 100.0 + RESTART_SECONDS
    assert disturbable([restarted, other], now) == [restarted]  # the other is the only one serving: left alone
    assert CELERY_READY.search("[2026-12-07 09:40:35,615: INFO/MainProcess] worker-skewed-8561@vm ready.")
    restarted.child.ready.set()
    assert disturbable([restarted, other], now) == [restarted, other]
