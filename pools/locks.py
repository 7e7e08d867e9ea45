"""Single flight per launch spec: a short lease in Redis that the running pass keeps renewing.

The lease lasts EIPDASH_LEASE_SECONDS (10 s by default). A thread of the holder renews it every third of
that, so a pass may take as long as it needs, but a worker that dies mid-pass (SIGKILL, OOM, node loss)
frees its spec within the lease time, and the next pass starts then instead of minutes later.

Fencing: a pass that was frozen (GC pause, SIGSTOP, a stalled Redis) may come back after its lease
expired and another pass took the spec. The holder calls `Lease.check()` before each step that writes
to AWS, Kubernetes or the claims, and stops at the first `LeaseLost`. The step already under way when
the lease expired is covered by the database claims and AllowReassociation=False.

The Redis key is the one the earlier long lock used (`eipdash:spec:<id>`), so that workers of both
versions exclude each other during a rolling update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis
from django.conf import settings
from redis.exceptions import LockError, LockNotOwnedError, RedisError

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This process no longer holds the spec's lease: another pass may be running. Write nothing more."""


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def lease_key(spec_id: int) -> str:
    return f"eipdash:spec:{spec_id}"


class Lease:
    """One holder's lease on one key. Without a Redis URL it is always held (a one-off command on a
    laptop): the database claims and AllowReassociation=False still keep one EIP on one node."""

    def __init__(self, key: str, *, seconds: float, url: str | None) -> None:
        self.key = key
        self.seconds = float(seconds)
        # thread_local=False: the renewal thread must see the token the acquiring thread got.
        self._lock = _client(url).lock(key, timeout=self.seconds, thread_local=False) if url else None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._valid_until = 0.0  # monotonic time until which the last acquire/renewal holds for sure
        self.held = False

    @property
    def redis_backed(self) -> bool:
        return self._lock is not None

    def acquire(self, wait_seconds: float = 0.0) -> bool:
        if self._lock is None:
            self.held = True
            return True
        started = time.monotonic()
        if not self._lock.acquire(blocking=wait_seconds > 0, blocking_timeout=wait_seconds or None):
            return False
        self._valid_until = started + self.seconds
        self.held = True
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.key}", daemon=True)
        self._thread.start()
        return True

    def renew(self) -> bool:
        """Push the expiry back to a full lease; False (and lost for good) when it is not ours any more."""
        if self._lock is None:
            return True
        if self._lost.is_set():
            return False
        started = time.monotonic()
        try:
            self._lock.reacquire()
        except (LockNotOwnedError, LockError):
            self._lose("it expired or another holder took it")
            return False
        except RedisError as exc:
            # Redis may be back before the lease runs out; until then the lease is still ours.
            if time.monotonic() >= self._valid_until:
                self._lose(f"Redis did not answer the renewal in time ({exc})")
                return False
            return True
        self._valid_until = started + self.seconds
        return True

    def check(self) -> None:
        """Raise LeaseLost unless this process provably still holds the lease. Call before each write."""
        if self._lock is None:
            return
        if not self.held or self._lost.is_set():
            raise LeaseLost(f"lease {self.key} lost")
        if time.monotonic() >= self._valid_until:
            self._lose("not renewed within its time")
            raise LeaseLost(f"lease {self.key} lost: not renewed within {self.seconds:g}s")
        try:
            owned = self._lock.owned()
        except RedisError as exc:
            raise LeaseLost(f"lease {self.key}: Redis does not answer ({exc}); cannot prove it is still ours") from exc
        if not owned:
            self._lose("another holder has it")
            raise LeaseLost(f"lease {self.key} lost: it expired and may be held by another pass")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.seconds)
        if self._lock is None or not self.held:
            self.held = False
            return
        self.held = False
        try:
            self._lock.release()
        except LockError:
            log.warning("%s: the lease was lost before the holder released it", self.key)
        except RedisError as exc:
            # It expires on its own within the lease time.
            log.warning("%s: could not release the lease (%s)", self.key, exc)

    def _lose(self, why: str) -> None:
        if not self._lost.is_set():
            log.warning("%s: lease lost: %s", self.key, why)
        self._lost.set()

    def _renew_loop(self) -> None:
        interval = self.seconds / 3
        while not self._stop.wait(interval):
            if not self.renew():
                return


@contextmanager
def spec_lease(spec_id: int, *, wait_seconds: float = 0.0) -> Iterator[Lease | None]:
    """The spec's lease while the block runs, or None when another process holds it (after waiting up
    to `wait_seconds`). Released on exit, whatever happens inside."""
    lease = Lease(lease_key(spec_id), seconds=settings.EIPDASH_LEASE_SECONDS, url=settings.REDIS_URL or None)
    if not lease.acquire(wait_seconds):
        yield None
        return
    try:
        yield lease
    finally:
        lease.release()


def _rerun_key(spec_id: int) -> str:
    return f"eipdash:spec:{spec_id}:rerun"


def ask_rerun(spec_id: int) -> None:
    """A pass found the spec's lease taken and did nothing: ask the holder for one more pass when it ends.

    The change that sent this pass (a node the watch just saw) may have come after the holder read the
    world; without this, it would wait for the next beat tick. Best effort: without Redis there is no lease
    to find taken, and a Redis error only costs that wait."""
    if not settings.REDIS_URL:
        return
    try:
        _client(settings.REDIS_URL).set(_rerun_key(spec_id), 1, ex=max(60, settings.EIPDASH_RECONCILE_SECONDS * 12))
    except RedisError as exc:
        log.debug("spec %s: rerun request not recorded: %s", spec_id, exc)


def take_rerun(spec_id: int) -> bool:
    """True once after ask_rerun (consumed): the caller, whose pass just ended, runs one more."""
    if not settings.REDIS_URL:
        return False
    try:
        return bool(_client(settings.REDIS_URL).delete(_rerun_key(spec_id)))
    except RedisError as exc:
        log.debug("spec %s: rerun request not read: %s", spec_id, exc)
        return False


@contextmanager
def spec_lock(spec_id: int, *, wait_seconds: float = 0.0) -> Iterator[bool]:
    """The same lease for callers that only need to know whether they got it (spec edits and deletes)."""
    with spec_lease(spec_id, wait_seconds=wait_seconds) as lease:
        yield lease is not None
