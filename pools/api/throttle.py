"""The API's rate limits. Every request under /api/ that reaches a DRF view is counted once:

- against its user when it authenticates (a token or the session): `EIPDASH_API_RATE`, all the user's tokens and
  their session together;
- against its client address otherwise (no credential, or a wrong, expired or revoked token):
  `EIPDASH_API_ANON_RATE`. Such a request gets its 401 until the address has spent the rate, then 429. A valid
  credential is never refused for the failures of an address, its own included: behind a proxy that eipdash is
  not told about, every client shares the proxy's address, and a stranger must not lock the users out.

A window is a sliding log in Redis (a sorted set of the last period's request times, on Redis's clock) that one
script prunes, counts and appends to: parallel requests, in any number of web processes, cannot all read the
same count and all pass, as they did with DRF's read-then-write SimpleRateThrottle. A refused request takes no
slot. The answer is DRF's 429 in JSON with `Retry-After`, the seconds until the oldest request leaves the window.

DRF authenticates and checks permissions before its throttles run, and an AuthenticationFailed or
NotAuthenticated ends the request there: such requests are counted in the API's exception handler, which turns
the 401 (or 403) into a 429 once their address is over its rate.

Without REDIS_URL (DEBUG runs), or while Redis does not answer, each process counts alone (logged): a limit per
process rather than none, and never a 500.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from django.conf import settings
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from pools.redis_keys import PREFIX

log = logging.getLogger(__name__)

# The throttle waits for Redis on every API request: a Redis that does not answer must not hold requests long.
REDIS_TIMEOUT_SECONDS = 1.0
KEY_PREFIX = f"{PREFIX}api-throttle:"
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Set on a request once it is counted: the exception handler must not count it a second time.
_COUNTED = "_eipdash_throttle_counted"

# Prune what left the window, then take a slot if one is free. Scores are Redis's own clock in milliseconds
# (13 digits: exact in Lua's numbers and in the script's number-to-string conversions), so web processes on
# hosts with skewed clocks share one window. Returns 0 when granted, else the milliseconds until a slot frees.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now)
"""


@dataclass(frozen=True)
class Rate:
    limit: int
    seconds: int


def parse_rate(text: str) -> Rate:
    """DRF's "N/period" (600/min, 20/s; the settings check the form)."""
    number, _, period = text.partition("/")
    return Rate(int(number), _PERIODS[period[0]])


def user_key(user_id: object) -> str:
    return f"{KEY_PREFIX}user:{user_id}"


def address_key(address: str) -> str:
    return f"{KEY_PREFIX}address:{address}"


@cache
def _script(url: str) -> Any:
    client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                  socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
    return client.register_script(_SCRIPT)


class _LocalWindows:
    """The same sliding logs in this process only, for when there is no Redis to share them through."""

    SWEEP_ABOVE = 10_000  # keys kept before the ones whose window emptied are dropped

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, rate: Rate) -> float | None:
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > self.SWEEP_ABOVE:
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - rate.seconds}
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - rate.seconds:
                hits.popleft()
            if len(hits) < rate.limit:
                hits.append(now)
                return None
            return hits[0] + rate.seconds - now

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()


_local = _LocalWindows()
_redis_failing = False


def forget_local() -> None:
    """Drop this process's own counters (the fallback's; tests start from none)."""
    _local.clear()


def hit(key: str, rate: Rate) -> float | None:
    """Take a slot of `key`'s window: None when granted, else the seconds until one frees."""
    global _redis_failing
    url = settings.REDIS_URL
    if url:
        try:
            wait_ms = int(_script(url)(keys=[key], args=[rate.limit, rate.seconds * 1000, secrets.token_hex(8)]))
        except redis.RedisError as exc:
            if not _redis_failing:
                log.warning("API rate limits: Redis does not answer (%s); each web process counts alone", exc)
                _redis_failing = True
        else:
            _redis_failing = False
            return wait_ms / 1000 if wait_ms else None
    return _local.hit(key, rate)


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def client_address(request: Any) -> str:
    """REMOTE_ADDR, as the login lockout uses; behind EIPDASH_NUM_PROXIES proxies, the address the outermost of
    them appended to X-Forwarded-For (what the client wrote before it is not trusted). A header with fewer
    entries, or one that is not an address there, falls back to REMOTE_ADDR."""
    meta = request.META
    proxies = int(settings.EIPDASH_NUM_PROXIES)
    if proxies > 0:
        hops = meta.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if len(hops) >= proxies:
            found = _ip(hops[-proxies])
            if found is not None:
                return found
    return _ip(meta.get("REMOTE_ADDR", "")) or "unknown"


def _authenticated_user(request: Request) -> Any:
    try:
        user = request.user  # authenticates now if DRF has not yet (an error raised before authentication)
    except exceptions.APIException:
        return None
    return user if user is not None and user.is_authenticated else None


def count(request: Request) -> float | None:
    """Count the request, once: None when within its rate, else the seconds to wait."""
    if getattr(request, _COUNTED, False):
        return None
    setattr(request, _COUNTED, True)
    user = _authenticated_user(request)
    if user is not None:
        return hit(user_key(user.pk), parse_rate(settings.EIPDASH_API_RATE))
    return hit(address_key(client_address(request)), parse_rate(settings.EIPDASH_API_ANON_RATE))


class TokenRateThrottle(BaseThrottle):
    """DRF's throttle hook (DEFAULT_THROTTLE_CLASSES): the requests that passed authentication and permissions."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        self._wait = count(request)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, after counting the requests that ended before the throttles ran (failed authentication,
    no credential, an account in no group): over their rate, the answer is 429 instead."""
    # Not at the top: importing rest_framework.views defines APIView, whose class body imports this module's
    # TokenRateThrottle (DEFAULT_THROTTLE_CLASSES); imported first, this module would be half-made then.
    from rest_framework.views import exception_handler as drf_exception_handler

    request = context.get("request")
    if isinstance(request, Request) and not isinstance(exc, exceptions.Throttled):
        wait = count(request)
        if wait is not None:
            exc = exceptions.Throttled(wait=wait)
    return drf_exception_handler(exc, context)
