"""The beat's ticks on a worker whose host clock runs ahead (no NTP): they must still run passes."""

from __future__ import annotations

import pytest
from django.conf import settings

from sandbox.chaos import faketime_env, faketime_library
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import World

pytestmark = pytest.mark.e2e


def test_a_worker_whose_clock_runs_30s_ahead_runs_the_beats_ticks(stack: Stack, world_tx: World) -> None:
    """Found by the fault campaign: the tick carried Celery's `expires`, a time on the beat's host, and the
    skewed worker, comparing it with its own clock, dropped every tick ("Discarding revoked task")."""
    from eipdash.celery import app
    from workers.tasks import reconcile_all

    library = faketime_library()
    if library is None:
        pytest.skip("no libfaketime that works on this machine (the libfaketime wheel is a dev dependency)")
    world = world_tx
    world.spec()
    world.eips(1)
    world.node("a")
    stack.env.update(faketime_env(library, 30))
    stack.worker()
    # A tick, as beat sends it: the schedule entry's own options.
    options = settings.CELERY_BEAT_SCHEDULE["reconcile-all"].get("options", {})
    with app.connection_for_write(stack.env["REDIS_URL"]) as conn:
        reconcile_all.apply_async(connection=conn, **options)
    eventually(lambda: world.eip_on("a"), timeout=60, stack=stack, what="the tick's pass gave node a its EIP")
