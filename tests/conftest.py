"""Shared fixtures: the embedded services every layer of the suite reuses."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pytest_django.fixtures import Settings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set (CI's real Redis), else an embedded server for this test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from sandbox.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


pytest_plugins = ["tests.fixtures.ec2", "tests.fixtures.kube", "tests.fixtures.web", "tests.fixtures.world"]


@pytest.fixture(autouse=True)
def _redis_for_locks(redis_url: str, settings: Settings) -> None:
    """The code under test takes its per-spec locks in Redis, as it does in production."""
    settings.REDIS_URL = redis_url


@pytest.fixture(autouse=True)
def _full_ec2_budget(_redis_for_locks: None) -> None:
    """Each test starts with the EC2 budget full (workers/budget.py), as if no test had spent it before."""
    from workers import budget

    budget.reset()


@pytest.fixture(autouse=True)
def _no_rerun_requests(redis_url: str) -> None:
    """Spec ids start over with each test's database: a rerun request another test left in a shared Redis
    (workers/tasks.py) must not send this test's spec an extra pass."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter("eipdash:spec:*:rerun"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Each test's database starts over (ids included), so a cache entry keyed on the record's version
    (the overview's pool-use spans) must not outlive the test that wrote it."""
    from django.core.cache import cache

    cache.clear()
