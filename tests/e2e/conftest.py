from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack


@pytest.fixture
def stack(redis_url: str, tmp_path: Path, transactional_db: None, ec2_emulator: object, kube_env: Path,
          ) -> Iterator[Stack]:
    """Processes started by the test; the environment already points at the emulators and the test DB."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # no task of an earlier test is left in the queue
    running = Stack(redis_url, tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def world_tx(ec2_world: object, kube_emulator: object, kube_env: Path, transactional_db: None) -> object:
    from tests.fixtures.world import World

    return World(ec2=ec2_world, kube=kube_emulator)  # type: ignore[arg-type]
