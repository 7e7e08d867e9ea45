"""Fixtures shared by the worker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """The beat's task runs its per-spec tasks in this process (the engine against the emulators)."""
    from eipdash.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = before
