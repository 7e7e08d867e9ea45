from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Stack

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


# The browser tests' fixtures: Debian's chromium driven by Playwright (`browser` is in tests/conftest.py).
@pytest.fixture
def page(browser, live_server) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()




@pytest.fixture
def fast_refresh(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Live parts poll every second (instead of 5 s), and no spec goes stale while a browser test runs."""
    from pools import views

    monkeypatch.setattr(views, "REFRESH_SECONDS", 1)
    settings.EIPDASH_RECONCILE_SECONDS = 3600
