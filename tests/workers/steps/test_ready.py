"""The ready step (workers/steps/ready.py): a taint is lifted only while the pass still holds its spec, and only
on an EIP that a look taken now shows on the node. Against both emulators, with a pass frozen mid-step in a
thread of its own while another pass takes the spec over."""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.db import connection

from pools.locks import lease_key
from tests.fixtures.world import TAINT, World, reconcile
from workers.apply import PassReport
from workers.kube import Kube
from workers.kube import Permanent as KubePermanent


class LiftFails(Kube):
    def mark_ready(self, *args: Any, **kwargs: Any) -> bool:
        raise KubePermanent("403: nodes is forbidden")


class FrozenBeforeTheLift(Kube):
    """The real client; the pass stops right before its write to the node (a GC pause, SIGSTOP), until told."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = threading.Event()
        self.thaw = threading.Event()

    def mark_ready(self, *args: Any, **kwargs: Any) -> bool:
        self.frozen.set()
        self.thaw.wait(30)
        return super().mark_ready(*args, **kwargs)


def test_a_pass_that_lost_its_spec_cannot_lift_a_taint_that_the_new_holder_put_back(
    world_tx: World, redis_url: str
) -> None:
    world = world_tx
    spec = world.spec()
    (eip,) = world.eips(1)
    world.node("a")
    reconcile(spec, kube=LiftFails())
    assert world.eip_on("a") == eip and TAINT in world.taints("a")  # the lift is left to the next pass

    frozen = FrozenBeforeTheLift()
    reports: list[PassReport] = []
    def stale_pass() -> None:
        try:
            reports.append(reconcile(spec, kube=frozen))
        finally:
            connection.close()  # the thread's own: left open, PostgreSQL cannot drop the test database

    stale = threading.Thread(target=stale_pass)
    stale.start()
    try:
        assert frozen.frozen.wait(30)
        # Frozen past its lease: the lease expires and another pass takes the spec. a drains meanwhile, so the
        # new holder re-taints it and takes its EIP back; then the drain is called off.
        redis.Redis.from_url(redis_url).delete(lease_key(spec.pk))
        world.cordon("a")
        reconcile(spec)
        assert world.eip_on("a") is None and TAINT in world.taints("a")
        world.uncordon("a")
    finally:
        frozen.thaw.set()
        stale.join(30)
    # The frozen pass goes on where it was: its lift is refused, whatever it read before.
    assert TAINT in world.taints("a") and world.eip_on("a") is None
    assert reports and any("stopped" in e for e in reports[0].errors), reports[0].lines() if reports else None
