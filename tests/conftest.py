"""Shared fixtures: the embedded services every layer of the suite reuses."""

from __future__ import annotations

import gc
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


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright, one per xdist worker for the whole session: each test opens its
    own context (cookies, storage), and a launch costs a second or two of CPU (the browser tests share 2 cores
    with everything else). Here, not in a folder's conftest: two fixtures of this name would each start
    Playwright, and its sync API refuses a second start in one thread."""
    # Playwright is a pinned dev dependency: missing, it is an install error, never a silent skip of the
    # browser tests (the XSS regression test among them). Only a missing chromium skips, with a message.
    import playwright.sync_api as sync_api

    from tests.e2e.conftest import CHROMIUM

    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield instance
        instance.close()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the fault campaign, then the tests that start processes (e2e), then the rest in their
    usual order. make test hands tests out two at a time (--maxschedchunk 2), so the long ones start at once
    on separate workers and the short ones fill in around them, instead of one long test ending the run
    alone. The sort is stable: modules stay together within each group, and every worker collects the same
    order, as xdist requires."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("campaign"):
            return 0
        return 1 if item.get_closest_marker("e2e") else 2

    items.sort(key=rank)


def pytest_configure(config: pytest.Config) -> None:
    """Fewer, later garbage collections in the test processes (not in the processes the tests start). Each
    worker's heap holds moto, botocore's models, Django and the emulators' state, and CPython's defaults
    (700, 10, 10) walked all of it again and again: 8-12 s of a worker's 80 s of CPU in tests/workers,
    against 2-3 s with these (measured with gc.callbacks). Young cycles are still collected at once."""
    gc.set_threshold(50_000, 20, 100)


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


@pytest.fixture(autouse=True)
def _adapter_clients_of_the_session_only() -> Iterator[None]:
    """The adapters keep one client per endpoint and per kubeconfig: a few in production (its regions and
    clusters), but here many tests bring an endpoint or a kubeconfig of their own. Kept, they held about a
    million objects per xdist worker, and every full garbage collection walked them all again. Only the
    clients of the worker's session emulators outlive a test."""
    yield
    from tests.fixtures.ec2 import SESSION_ENDPOINTS
    from workers import ec2, kube

    with ec2._clients_lock:
        for key in [key for key in ec2._clients if key[1] not in SESSION_ENDPOINTS]:
            del ec2._clients[key]
        ec2._quotas_clients.clear()
    with kube._clients_lock:
        kube._clients.clear()  # each test's kubeconfig is a file of its own (tmp_path)
