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
def _clean_redis_namespace(_redis_for_locks: None, redis_url: str) -> None:
    """Each test starts with this worker's own Redis database empty (tests/fixtures/namespace.py): ids start
    over with each test's database, so a lease, a rerun request, a shared reading (ordered by a sequence that
    starts over too) or a spent EC2 budget that another test left must not reach this one."""
    import redis

    from workers import budget, readings

    redis.Redis.from_url(redis_url).flushdb()
    budget.reset()
    readings.forget()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Each test's database starts over (ids included), so a cache entry keyed on the record's version
    (the overview's pool-use spans) must not outlive the test that wrote it."""
    from django.core.cache import cache

    cache.clear()
