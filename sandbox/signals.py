"""How the sandbox's long-running commands take Ctrl-C (SIGINT) and SIGTERM.

Installing a handler is not enough. A parent can start us with these signals *blocked*: some CI runners and
service managers do. The mask survives fork and exec, and a blocked signal stays pending forever, handler or
not: Ctrl-C would then do nothing. A parent can also start us with them *ignored*: a non-interactive shell
does this for background jobs, and Python keeps an ignored SIGINT ignored. So both are undone here.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers


def on_stop_signals(handler: Handler, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
    """Let `signals` through (unblock them) and handle them with `handler`."""
    for signum in signals:
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(signals))
