"""The beat's task: its housekeeping never stops the passes of the tick."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from pools import redis_keys, services
from pools.models import Assignment, LaunchSpec
from tests.fixtures.world import TAINT, World, reconcile


def tick() -> int:
    """One beat tick, the last one half an interval ago or more (pools/locks.py take_tick)."""
    from workers import tasks

    redis.Redis.from_url(settings.REDIS_URL).delete(redis_keys.beat_tick())
    return tasks.reconcile_all()


def test_ticks_that_queued_up_do_the_work_once(world: World, eager_tasks: None) -> None:
    """No worker ran for a while: the ticks queued meanwhile arrive together, and only the first runs passes."""
    from workers import tasks

    world.spec()
    assert tasks.reconcile_all() == 1
    assert tasks.reconcile_all() == 0  # right behind: the gate, on Redis's clock
    assert tick() == 1  # half an interval later


def test_a_failing_reassign_cleanup_does_not_stop_the_passes(world: World, eager_tasks: None) -> None:

    spec = world.spec()
    world.eips(1)
    world.node("a")
    # The cleanup of stale manual-reassign requests cannot read its table (a broken or half-migrated
    # database): the tick must still run every spec's pass.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE pools_reassignrequest")
    assert tick() == 1
    assert world.eip_on("a") is not None
    assert Assignment.objects.filter(launch_spec=spec, closed_at__isnull=True).count() == 1


def test_the_beat_keeps_running_a_disabled_spec_until_it_holds_nothing(world: World, eager_tasks: None) -> None:

    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    world.cordon("a")
    assert tick() == 1
    assert world.eip_on("a") is None and not Assignment.objects.filter(closed_at__isnull=True).exists()
    assert tick() == 0  # drained: nothing left to run for


def test_the_beat_runs_a_disabled_spec_until_its_waiting_nodes_are_gone(world: World, eager_tasks: None) -> None:
    """A disabled spec whose claims are all closed still has a node waiting under the startup taint (its pool
    ran dry, then its EIP left the pool): the beat keeps giving it passes, which see the node go, and only then
    stops; the spec can be deleted."""

    spec = world.spec()
    (eip,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    # Someone takes the EIP off the node and out of the pool.
    world.ec2.client.disassociate_address(AssociationId=world.address(eip)["AssociationId"])
    world.ec2.client.delete_tags(Resources=[eip], Tags=[{"Key": "eipdash/pool"}])
    reconcile(spec)  # a's claim closes; a waits, tainted
    assert not Assignment.objects.filter(closed_at__isnull=True).exists() and TAINT in world.taints("a")
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    world.kube.delete("nodes", "a")  # scaled away
    assert tick() == 1  # a pass, which sees a gone
    assert tick() == 0  # nothing left to run for
    services.launch_spec_delete(name=spec.name)
    assert not LaunchSpec.objects.filter(pk=spec.pk).exists()


def test_the_beat_runs_a_disabled_spec_while_a_pool_eip_is_on_its_node_without_a_claim(
    world: World, eager_tasks: None
) -> None:
    """An association whose answer was an error although it landed: its claim closed as transient, and the EIP
    is on the node with no open claim. Then "Disable and drain": the beat must still give the spec passes until
    that EIP is off the node (I4), though the spec has no open claim and no node waiting."""
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    assert world.eip_on("a") is not None
    Assignment.objects.filter(closed_at__isnull=True).update(
        closed_at=timezone.now(), close_kind=Assignment.CloseKind.TRANSIENT, close_reason="AWS call failed: 500")
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    world.cordon("a")  # drained: nothing keeps the EIP there
    ran = [tick() for _ in range(3)]
    assert ran[0] == 1, ran  # a pass, although no claim is open and nothing waits
    assert world.eip_on("a") is None and not Assignment.objects.filter(closed_at__isnull=True).exists()
    assert ran[-1] == 0, ran  # then nothing left to run for
