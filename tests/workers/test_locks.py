"""The per-spec lease on real Redis: renewed while its holder runs, free once the holder stops renewing,
and fencing: a pass that lost it writes nothing more (asserted on AWS and the record)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
import redis
from django.core.management import call_command
from pytest_django.fixtures import Settings

from pools.locks import Lease, LeaseLost, lease_key, spec_lease
from pools.models import Assignment
from tests.fixtures.polling import eventually
from tests.fixtures.world import World
from workers import executor
from workers.ec2 import Ec2


def steal_lease(redis_url: str, spec_id: int) -> None:
    """Another holder takes the lease (as after our lease expired during a pause), for a few seconds."""
    redis.Redis.from_url(redis_url).set(lease_key(spec_id), b"another-holder", px=3000)



def test_a_renewed_lease_outlives_its_time_and_is_free_on_release(redis_url: str, settings: Settings,
                                                                  db: None) -> None:
    settings.EIPDASH_LEASE_SECONDS = 3
    key = lease_key(910001)
    client = redis.Redis.from_url(redis_url)
    with spec_lease(910001) as lease:
        assert lease is not None
        with spec_lease(910001) as other:
            assert other is None
        # Past two lease times, renewed by its thread, it is still ours.
        renewed_until = time.monotonic() + 2 * 3
        eventually(lambda: time.monotonic() > renewed_until, timeout=10, what="two lease times")
        lease.check()
        assert client.pttl(key) > 0
    assert client.get(key) is None
    with spec_lease(910001) as again:
        assert again is not None


def test_a_lease_nobody_renews_expires_and_its_holder_is_fenced(redis_url: str) -> None:
    first = Lease(lease_key(910002), seconds=3, url=redis_url)
    assert first.acquire()
    first._stop.set()  # the holder freezes: its renewal thread stops, as under SIGSTOP or a long pause
    second = Lease(lease_key(910002), seconds=3, url=redis_url)
    eventually(lambda: second.acquire(), timeout=10, what="the expired lease taken by another holder")
    with pytest.raises(LeaseLost):
        first.check()
    second.check()
    first.release()  # must not free the other holder's lease
    second.check()
    second.release()


def test_a_pass_whose_lease_was_taken_writes_nothing(world: World, redis_url: str) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    world.node("b")
    with spec_lease(spec.pk) as lease:
        assert lease is not None
        # Another holder has it now (our lease expired during a pause and someone took it).
        steal_lease(redis_url, spec.pk)
        report = executor.run_pass(spec, lease=lease)
    assert any("lease" in line and "stopped" in line for line in report.errors)
    assert world.all_associations() == {} and not Assignment.objects.exists()


class PausingEc2(Ec2):
    """The real adapter; after AWS accepts the first association, the process 'pauses' long enough for
    its lease to be taken by another holder."""

    def __init__(self, region: str, steal: Callable[[], None]) -> None:
        super().__init__(region)
        self._steal = steal

    def associate(self, *, allocation_id: str, eni_id: str, private_ip: str, allow_reassociation: bool = False) -> str:
        association_id = super().associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip,
                                           allow_reassociation=allow_reassociation)
        self._steal()
        return association_id


def test_a_pass_stops_before_its_next_step_once_the_lease_is_lost(
    world: World, redis_url: str, settings: Settings
) -> None:
    spec = world.spec()
    settings.EIPDASH_STEP_CONCURRENCY = 1  # the slice's two associations one after the other
    world.eips(2)
    world.node("a")
    world.node("b")

    def steal() -> None:
        steal_lease(redis_url, spec.pk)

    report = executor.reconcile_spec(spec.pk, ec2=PausingEc2("us-east-1", steal))
    # The association under way was made; the second one was never sent, and its claim is closed.
    assert len(world.all_associations()) == 1
    assert Assignment.objects.filter(closed_at__isnull=True).count() == 1
    assert Assignment.objects.filter(closed_at__isnull=False, close_reason__contains="lost its lease").count() == 1
    assert any("stopped" in line for line in report.errors)


def test_manage_py_reconcile_takes_the_same_lease(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    out = io.StringIO()
    with spec_lease(spec.pk) as lease:  # a worker's pass, or a manual reassign, holds the spec
        assert lease is not None
        call_command("reconcile", "--spec", spec.name, stdout=out)
        assert "skipped (another worker is running this spec's pass)" in out.getvalue()
        assert world.all_associations() == {}
    call_command("reconcile", "--spec", spec.name, stdout=out)
    assert world.eip_on("a") is not None
