"""sandbox/signals.py: a stop signal that the parent blocked or ignored still reaches the handler."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from sandbox.signals import on_stop_signals


@pytest.fixture
def restored() -> Iterator[None]:
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("inherited", ["blocked", "ignored"])
def test_on_stop_signals_handles_a_signal_that_the_parent_blocked_or_ignored(restored: None, inherited: str) -> None:
    if inherited == "blocked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    received: list[int] = []
    on_stop_signals(lambda signum, _frame: received.append(signum))
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    # A signal sent to this process while it is unblocked runs its handler before os.kill returns to Python code.
    assert sorted(received) == sorted([signal.SIGINT, signal.SIGTERM])
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, set()) & {signal.SIGINT, signal.SIGTERM}
