"""Single-flight per launch spec: a redis-py Lock that outlives the task's hard time limit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis
from django.conf import settings
from redis.exceptions import LockError

log = logging.getLogger(__name__)


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


@contextmanager
def spec_lock(spec_id: int, *, wait_seconds: float = 0.0) -> Iterator[bool]:
    """Yield True when this process now runs the spec's pass, False when another one does.

    Without REDIS_URL (a one-off `manage.py reconcile` on a laptop) there is no lock to take: the DB
    claims and AllowReassociation=False still keep one EIP on one node.
    """
    url = settings.REDIS_URL
    if not url:
        yield True
        return
    lock = _client(url).lock(
        f"eipdash:spec:{spec_id}",
        timeout=settings.EIPDASH_SPEC_LOCK_SECONDS,
        blocking=wait_seconds > 0,
        blocking_timeout=wait_seconds or None,
    )
    acquired = bool(lock.acquire())
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except LockError:
                # It expired: the pass overran the lock, which is longer than the hard time limit.
                log.warning("spec %s: the single-flight lock expired before the pass ended", spec_id)
