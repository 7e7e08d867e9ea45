"""EC2's request budget, shared by every worker of an account and region.

EC2 throttles each account per region with token buckets: the mutating calls (AssociateAddress,
DisassociateAddress...) share a bucket of 50 tokens refilled 5 per second, the non-mutating ones (Describe*)
one of 100 refilled 20 per second; a call that finds its bucket empty fails with RequestLimitExceeded. We
keep a mirror of both buckets and take a token before each HTTP request (workers/ec2.py does, for every
attempt, botocore's retries included), so that a burst spends the burst at once, then the refill rate, and
never asks AWS for a call it would refuse.

The buckets live in Redis (one hash per region and kind, updated by one atomic Lua script on Redis's own
clock), so every worker process of the deployment shares them. Without REDIS_URL (a laptop, the tests'
embedded defaults), or while Redis does not answer, an in-process bucket with the same rules paces this
process alone.

Headroom: a call takes its token here before it reaches AWS, and the two clocks never agree exactly, so
two calls sent 200 ms apart may arrive 150 ms apart. The mirror therefore leaves a little of the bucket
unspent (`headroom()`: 2 tokens, at most a twentieth of the bucket): a burst of 50 gets 48 calls at once.

A batch of calls sized to the budget (an assign slice) reserves its tokens when it is sized (`reserve()`,
`spending()`): the passes of other specs of the region, in other worker processes, size theirs from what is left,
instead of all sizing to the same tokens and then queueing for the refill while their look at their targets
grows old. A reservation is taken whole or not at all below its least, so no worker holds a few tokens while it
waits for more, and what the batch did not spend goes back.

A wait for a token never goes past the deadline of the running pass (`deadline()`, a context variable the
executor sets and its threads inherit): at the deadline `OutOfTime` says the call was never sent, and the
step is left for the next pass. When AWS throttles anyway (another tool of the account spends the same
budget), `throttled()` empties the shared bucket: AWS told us it is empty, so every worker waits for the
refill. This module may use redis, never boto3.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from redis.exceptions import RedisError

from pools import redis_keys

log = logging.getLogger(__name__)

MUTATE = "mutate"
READ = "read"
# EC2's non-mutating actions (the rest mutate), as its throttling documentation groups them.
_READ_PREFIXES = ("Describe", "Get", "List", "Search")


class OutOfTime(Exception):
    """No token came before the deadline: the call was not sent."""


_deadline: ContextVar[float | None] = ContextVar("eipdash_ec2_deadline", default=None)


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Waits for a token inside the block give up at `at` (time.monotonic(); None: wait as long as it takes).
    Threads started with contextvars.copy_context() (the executor's pool) inherit it."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    return _deadline.get()


def kind_of(operation: str) -> str:
    return READ if operation.startswith(_READ_PREFIXES) else MUTATE


def bucket_key(region: str, kind: str) -> str:
    return redis_keys.budget(region, kind)


@dataclass(frozen=True)
class Answer:
    granted: int  # tokens
    before: float  # the tokens there were before this call took any
    wait: float  # seconds until `least` tokens could be granted, when none were

    @property
    def tokens(self) -> float:
        """Left after this call."""
        return self.before - self.granted


# ARGV: burst, rate, op, headroom (tokens left unspent), want, least, borrow. The ops: 1 takes `want` tokens, or as
# many as there are past the headroom, plus `borrow` of the refill to come, when that is at least `least` (else
# none: no caller hoards tokens while it waits for more); 0 looks; -1 empties the bucket; 2 gives `want` tokens
# back (a reservation's unspent ones). Redis's own clock, so that the workers of every host agree. The state:
# tokens and the time they were counted at; refilled on each call; never above the burst, below 0 only by what
# was borrowed (every caller then waits for the refill to repay it). Returns the tokens granted, the tokens there
# were before them (the caller derives when each borrowed one comes due), and the wait until `least` could be
# granted.
_SCRIPT = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local op = tonumber(ARGV[3])
local headroom = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local least = tonumber(ARGV[6])
local borrow = tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
local granted = 0
local before = tokens
if op == 1 then
  local spendable = math.floor(tokens - headroom + borrow)
  if spendable >= least then
    granted = math.min(want, spendable)
    tokens = tokens - granted
  end
elseif op == -1 then
  tokens = math.min(tokens, 0)
elseif op == 2 then
  tokens = math.min(burst, tokens + want)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
local wait = 0
if tokens + borrow < least + headroom then
  wait = (least + headroom - tokens - borrow) / rate
end
return {granted, tostring(before), tostring(wait)}
"""

TAKE, LOOK, EMPTY, GIVE_BACK = 1, 0, -1, 2


def headroom(burst: float) -> float:
    """Tokens of AWS's bucket the mirror never spends: 2, at most a twentieth of it (none for small ones)."""
    return float(min(2, int(burst) // 20))


class LocalBucket:
    """The same bucket in this process only (no Redis)."""

    def __init__(self, burst: float, rate: float) -> None:
        self.burst, self.rate = float(burst), float(rate)
        self.headroom = headroom(burst)
        self.tokens = self.burst
        self.at = time.monotonic()
        self._lock = threading.Lock()

    def call(self, op: int, want: int = 1, least: int = 1, borrow: float = 0.0) -> Answer:
        with self._lock:
            now = time.monotonic()
            if now > self.at:
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = max(self.at, now)
            granted = 0
            before = self.tokens
            if op == TAKE:
                spendable = math.floor(self.tokens - self.headroom + borrow)
                if spendable >= least:
                    granted = min(want, spendable)
                    self.tokens -= granted
            elif op == EMPTY:
                self.tokens = min(self.tokens, 0.0)
            elif op == GIVE_BACK:
                self.tokens = min(self.burst, self.tokens + want)
            short = least + self.headroom - self.tokens - borrow
            return Answer(granted, before, short / self.rate if short > 0 else 0.0)


class RedisBucket:
    def __init__(self, url: str, key: str, burst: float, rate: float) -> None:
        self.key, self.burst, self.rate = key, float(burst), float(rate)
        self._script = _client(url).register_script(_SCRIPT)
        # Used while Redis does not answer: pacing this process alone beats not pacing at all.
        self.fallback = LocalBucket(burst, rate)
        self._warned = False

    def call(self, op: int, want: int = 1, least: int = 1, borrow: float = 0.0) -> Answer:
        try:
            granted, before, wait = self._script(keys=[self.key], args=[self.burst, self.rate, op,
                                                                        headroom(self.burst), want, least, borrow])
        except RedisError as exc:
            if not self._warned:
                log.warning("EC2 budget %s: Redis does not answer (%s); pacing this process alone", self.key, exc)
                self._warned = True
            return self.fallback.call(op, want, least, borrow)
        self._warned = False
        return Answer(int(granted), float(before), float(wait))


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


_buckets: dict[tuple[str, str, str | None, float, float], LocalBucket | RedisBucket] = {}
_buckets_lock = threading.Lock()


def _sizes(kind: str) -> tuple[float, float]:
    if kind == MUTATE:
        return float(settings.EIPDASH_EC2_MUTATE_BURST), float(settings.EIPDASH_EC2_MUTATE_RATE)
    return float(settings.EIPDASH_EC2_READ_BURST), float(settings.EIPDASH_EC2_READ_RATE)


def bucket(region: str, kind: str) -> LocalBucket | RedisBucket:
    """The bucket of one region and kind, with the sizes and Redis the settings say now."""
    burst, rate = _sizes(kind)
    url = settings.REDIS_URL or None
    key = (region, kind, url, burst, rate)
    with _buckets_lock:
        found = _buckets.get(key)
        if found is None:
            found = (RedisBucket(url, bucket_key(region, kind), burst, rate) if url
                     else LocalBucket(burst, rate))
            _buckets[key] = found
        return found


class Reservation:
    """Tokens taken at once for a batch of calls (an assign slice), so that the batch is sized to tokens nobody
    else can spend meanwhile: the calls of one region and kind made in its `spending()` block, in any thread
    started from there, take theirs from it first. A borrowed token (see `reserve`) is spent once the refill has
    brought it, on this host's monotonic clock. What is left when the block ends goes back to the bucket."""

    def __init__(self, region: str, kind: str, due: list[float]) -> None:
        self.region, self.kind, self.count = region, kind, len(due)
        self._due = deque(sorted(due))  # time.monotonic() at which each token is there
        self._lock = threading.Lock()

    @property
    def left(self) -> int:
        return len(self._due)

    @property
    def last_due(self) -> float:
        return self._due[-1] if self._due else 0.0

    def spend(self, region: str, kind: str, until: float | None) -> bool:
        """One token, after the wait for it if it is borrowed; False (nothing spent) when the reservation has none
        for this call, or when the next one comes due after `until`."""
        with self._lock:
            if not self._due or (region, kind) != (self.region, self.kind):
                return False
            if until is not None and self._due[0] > until:
                return False
            due = self._due.popleft()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return True

    def give_back(self) -> int:
        with self._lock:
            unspent = len(self._due)
            self._due.clear()
        if unspent:
            bucket(self.region, self.kind).call(GIVE_BACK, unspent)
        return unspent


_reservation: ContextVar[Reservation | None] = ContextVar("eipdash_ec2_reservation", default=None)


@contextmanager
def spending(reservation: Reservation) -> Iterator[Reservation]:
    token = _reservation.set(reservation)
    try:
        yield reservation
    finally:
        _reservation.reset(token)
        reservation.give_back()


def reserve(region: str, kind: str, want: int, least: int = 1, *, borrow_seconds: float = 0.0,
            until: float | None = None) -> Reservation:
    """Take `want` tokens at once, or as many as there are once there are `least` (no caller holds a few while
    it waits for more, so several workers waiting for one refill all get their turn). `borrow_seconds`: the
    tokens the refill brings within that time count too, shared by every caller (the bucket goes below zero by
    at most that much), each spent when it is there: a batch can do its preparation meanwhile. Waits up to
    `until` (default: the running pass's deadline, see `deadline()`), and borrows nothing due after it; when
    `least` would come after it, takes what one token's wait brings; OutOfTime (nothing taken) when even that
    comes too late."""
    if until is None:
        until = _deadline.get()
    least = max(1, min(least, want))
    b = bucket(region, kind)
    while True:
        now = time.monotonic()
        horizon = borrow_seconds if until is None else max(0.0, min(borrow_seconds, until - now))
        answer = b.call(TAKE, want, least, horizon * b.rate)
        at = time.monotonic()
        if answer.granted:
            # The j-th token is there once the refill lifts the bucket to j tokens above its headroom (0: now).
            spare = headroom(b.burst)
            waits = [(j + spare - answer.before) / b.rate for j in range(1, answer.granted + 1)]
            return Reservation(region, kind, [at + wait if wait > 0 else 0.0 for wait in waits])
        if until is not None and at + answer.wait > until:
            if least > 1:
                least = 1
                continue
            raise OutOfTime(f"no EC2 {kind} token for {region} before the pass deadline")
        # A little jitter, so that the workers waiting for the same refill do not all ask at once.
        time.sleep(answer.wait * (1 + random.random() / 10))  # noqa: S311 (jitter, not cryptography)


def acquire(region: str, kind: str, *, until: float | None = None) -> None:
    """One token for one call: from the running batch's reservation (`spending()`) when it has one left, else
    from the bucket, waiting for the refill if need be; OutOfTime (nothing taken) when the next token comes
    after `until` (default: the running pass's deadline, see `deadline()`)."""
    if until is None:
        until = _deadline.get()
    held = _reservation.get()
    if held is not None and held.spend(region, kind, until):
        return
    reserve(region, kind, 1, until=until)


def available(region: str, kind: str) -> float:
    """The tokens there now that calls may take (a look: none taken)."""
    b = bucket(region, kind)
    return max(0.0, b.call(LOOK).tokens - headroom(b.burst))


def throttled(region: str, kind: str) -> None:
    """AWS answered RequestLimitExceeded: its bucket is empty, so ours is emptied too (every worker waits)."""
    bucket(region, kind).call(EMPTY)
    log.info("EC2 throttled a %s call in %s: the shared budget is emptied and refills from now", kind, region)


def reset() -> None:
    """Forget every bucket (tests): those in Redis are deleted, so they all start full again."""
    with _buckets_lock:
        _buckets.clear()
    url = settings.REDIS_URL or None
    if url:
        client = _client(url)
        keys = list(client.scan_iter(match=f"{redis_keys.BUDGET_PREFIX}*"))
        if keys:
            client.delete(*keys)
