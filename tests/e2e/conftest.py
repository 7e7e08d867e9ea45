from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.ec2_emulator import Ec2World
from sandbox.kube_emulator import KubeEmulator
from tests.e2e.stack import Stack
from tests.fixtures.world import World

CHROMIUM = Path("/usr/bin/chromium")


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
def world_tx(ec2_world: Ec2World, kube_emulator: KubeEmulator, kube_env: Path, transactional_db: None) -> World:
    """The engine's test world on a committed database, for tests that start other processes."""
    return World(ec2=ec2_world, kube=kube_emulator)


# The browser tests' fixtures: Debian's chromium driven by Playwright.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Playwright is a pinned dev dependency: missing, it is an install error, never a silent skip of the
    # browser tests (the XSS regression test among them). Only a missing chromium skips, with a message.
    import playwright.sync_api as sync_api
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser, live_server) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


