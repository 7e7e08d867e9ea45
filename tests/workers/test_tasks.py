"""The beat's task: its housekeeping never stops the passes of the tick."""

from __future__ import annotations

from django.db import connection

from pools.models import Assignment, LaunchSpec
from tests.fixtures.world import World, reconcile


def test_a_failing_reassign_cleanup_does_not_stop_the_passes(world: World, eager_tasks: None) -> None:
    from workers import tasks

    spec = world.spec()
    world.eips(1)
    world.node("a")
    # The cleanup of stale manual-reassign requests cannot read its table (a broken or half-migrated
    # database): the tick must still run every spec's pass.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE pools_reassignrequest")
    assert tasks.reconcile_all() == 1
    assert world.eip_on("a") is not None
    assert Assignment.objects.filter(launch_spec=spec, closed_at__isnull=True).count() == 1


def test_the_beat_keeps_running_a_disabled_spec_until_it_holds_nothing(world: World, eager_tasks: None) -> None:
    from workers import tasks

    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    world.cordon("a")
    assert tasks.reconcile_all() == 1
    assert world.eip_on("a") is None and not Assignment.objects.filter(closed_at__isnull=True).exists()
    assert tasks.reconcile_all() == 0  # drained: nothing left to run for
