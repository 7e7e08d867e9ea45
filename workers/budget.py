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
grows old. A reservation *holds* its tokens: they stay in the bucket, out of others' reach, until each call is
about to be sent, since AWS's bucket refills only once the calls arrive (taking them at the reservation would
start the mirror's refill early, and a later burst would meet RequestLimitExceeded). It is granted whole or not
at all below its least, so no worker holds a few tokens while it waits for more; it may count the next second of
refill; what the batch did not spend is free again when it ends, and a hold expires by itself after
HOLD_SECONDS (a worker that died holding tokens).

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
import uuid
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
    granted: int  # tokens taken (TAKE, SPEND) or held (HOLD)
    tokens: float  # in the bucket after this call, held ones included
    held: float  # of those, held by reservations
    wait: float  # seconds until the call could be granted, when it was not

    @property
    def free(self) -> float:
        """What a call without a reservation may take (the headroom aside)."""
        return self.tokens - self.held


# KEYS: the bucket (tokens and the time they were counted at, refilled on each call, never above the burst) and its
# holds (reservation id -> "count expiry"). ARGV: burst, rate, op, headroom (tokens left unspent), want, least,
# borrow, id, ttl. The ops:
#   1 TAKE: one token for a call without a reservation, from what no reservation holds;
#   3 HOLD: reserve `want` tokens, or as many as no reservation holds plus `borrow` of the refill to come, when
#     that is at least `least` (else none: nobody holds a few while it waits for more), for `ttl` seconds;
#   4 SPEND: one token of reservation `id`, right before its call: taken once the bucket has it (a held token
#     stays in the bucket until then, as it does in AWS's, which refills only once the calls arrive); a
#     reservation that expired spends like TAKE;
#   2 GIVE_BACK: drop reservation `id` (its unspent tokens are free again); 0 LOOK; -1 EMPTY (AWS throttled).
# Expired holds are dropped on every call: a worker that died holding tokens keeps them at most `ttl` seconds.
# Redis's own clock for the refill and the expiries, so that the workers of every host agree.
_SCRIPT = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local op = tonumber(ARGV[3])
local headroom = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local least = tonumber(ARGV[6])
local borrow = tonumber(ARGV[7])
local id = ARGV[8]
local ttl = tonumber(ARGV[9])
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
local held = 0
local mine = 0
local holds = redis.call('HGETALL', KEYS[2])
for i = 1, #holds, 2 do
  local count, expiry = string.match(holds[i + 1], '(%S+) (%S+)')
  if tonumber(expiry) <= now then
    redis.call('HDEL', KEYS[2], holds[i])
  else
    held = held + tonumber(count)
    if holds[i] == id then mine = tonumber(count) end
  end
end
local granted = 0
local wait = 0
local need = 0
if op == 1 or (op == 4 and mine == 0) then
  need = 1 + headroom + held - tokens
  if need <= 0 then
    tokens = tokens - 1
    granted = 1
  end
elseif op == 4 then
  need = 1 + headroom - tokens
  if need <= 0 then
    tokens = tokens - 1
    held = held - 1
    granted = 1
    if mine > 1 then
      redis.call('HSET', KEYS[2], id, tostring(mine - 1) .. ' ' .. tostring(now + ttl))
    else
      redis.call('HDEL', KEYS[2], id)
    end
  end
elseif op == 3 then
  local spendable = math.floor(tokens - held - headroom + borrow)
  need = least + headroom + held - tokens - borrow
  if spendable >= least then
    granted = math.min(want, spendable)
    held = held + granted
    redis.call('HSET', KEYS[2], id, tostring(granted) .. ' ' .. tostring(now + ttl))
    need = 0
  end
elseif op == 2 then
  redis.call('HDEL', KEYS[2], id)
  held = held - mine
elseif op == -1 then
  tokens = math.min(tokens, 0)
end
if need > 0 then
  wait = need / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 60)
return {granted, tostring(tokens), tostring(held), tostring(wait)}
"""

TAKE, LOOK, EMPTY, GIVE_BACK, HOLD, SPEND = 1, 0, -1, 2, 3, 4
# How long a reservation holds its tokens at most: far longer than a slice takes to send its calls (they go out
# within seconds of its look), so only a worker that died or froze holding tokens loses them this way.
HOLD_SECONDS = 15.0


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
        self.holds: dict[str, tuple[int, float]] = {}  # reservation id -> (count, expiry)
        self._lock = threading.Lock()

    def call(self, op: int, want: int = 1, least: int = 1, borrow: float = 0.0, hold_id: str = "") -> Answer:
        with self._lock:
            now = time.monotonic()
            if now > self.at:
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = max(self.at, now)
            self.holds = {key: hold for key, hold in self.holds.items() if hold[1] > now}
            mine = self.holds.get(hold_id, (0, 0.0))[0] if hold_id else 0
            granted, need = 0, 0.0
            held = float(sum(count for count, _ in self.holds.values()))
            if op == TAKE or (op == SPEND and not mine):
                need = 1 + self.headroom + held - self.tokens
                granted = int(need <= 0)
            elif op == SPEND:
                need = 1 + self.headroom - self.tokens
                if need <= 0:
                    granted, held = 1, held - 1
                    if mine > 1:
                        self.holds[hold_id] = (mine - 1, now + HOLD_SECONDS)
                    else:
                        del self.holds[hold_id]
            elif op == HOLD:
                spendable = math.floor(self.tokens - held - self.headroom + borrow)
                need = least + self.headroom + held - self.tokens - borrow
                if spendable >= least:
                    granted, need = min(want, spendable), 0.0
                    held += granted
                    self.holds[hold_id] = (granted, now + HOLD_SECONDS)
            elif op == GIVE_BACK:
                self.holds.pop(hold_id, None)
                held -= mine
            elif op == EMPTY:
                self.tokens = min(self.tokens, 0.0)
            if op in (TAKE, SPEND) and granted:
                self.tokens -= 1
            return Answer(granted, self.tokens, held, need / self.rate if need > 0 else 0.0)


class RedisBucket:
    def __init__(self, url: str, key: str, burst: float, rate: float) -> None:
        self.key, self.burst, self.rate = key, float(burst), float(rate)
        self._script = _client(url).register_script(_SCRIPT)
        # Used while Redis does not answer: pacing this process alone beats not pacing at all.
        self.fallback = LocalBucket(burst, rate)
        self._warned = False

    def call(self, op: int, want: int = 1, least: int = 1, borrow: float = 0.0, hold_id: str = "") -> Answer:
        try:
            granted, tokens, held, wait = self._script(
                keys=[self.key, f"{self.key}:holds"],
                args=[self.burst, self.rate, op, headroom(self.burst), want, least, borrow, hold_id, HOLD_SECONDS])
        except RedisError as exc:
            if not self._warned:
                log.warning("EC2 budget %s: Redis does not answer (%s); pacing this process alone", self.key, exc)
                self._warned = True
            return self.fallback.call(op, want, least, borrow, hold_id)
        self._warned = False
        return Answer(int(granted), float(tokens), float(held), float(wait))


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
    """Tokens held for a batch of calls (an assign slice), so that the batch is sized to tokens nobody else can
    take meanwhile: the calls of one region and kind made in its `spending()` block, in any thread started from
    there, spend theirs from it first. A held token stays in the bucket until its call is about to be sent (AWS's
    bucket refills only once the calls arrive, so the mirror must not start the refill any sooner); a borrowed one
    (see `reserve`) is spent once the refill has brought it. What is left when the block ends is free again."""

    def __init__(self, region: str, kind: str, count: int, hold_id: str) -> None:
        self.region, self.kind, self.count, self.hold_id = region, kind, count, hold_id
        self.left = count
        self._lock = threading.Lock()

    def spend(self, region: str, kind: str, until: float | None) -> bool:
        """One held token for a call about to be sent, after the wait for the refill if the bucket does not have
        it yet; False when the reservation has none for this call. OutOfTime when it comes after `until`."""
        if (region, kind) != (self.region, self.kind):
            return False
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
        b = bucket(self.region, self.kind)
        while True:
            answer = b.call(SPEND, hold_id=self.hold_id)
            if answer.granted:
                return True
            if _too_late(answer, until):
                with self._lock:
                    self.left += 1  # not spent: it goes back with the rest
                raise _out_of_time(self.region, self.kind)
            _wait(answer)

    def give_back(self) -> int:
        with self._lock:
            unspent, self.left = self.left, 0
        bucket(self.region, self.kind).call(GIVE_BACK, hold_id=self.hold_id)
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
    """Hold `want` tokens, or as many as there are once there are `least` (no caller holds a few while it waits
    for more, so several workers waiting for one refill all get their turn). `borrow_seconds`: the tokens the
    refill brings within that time count too, shared by every caller, each spent once the bucket has it: a batch
    can do its preparation meanwhile. Waits up to `until` (default: the running pass's deadline, see
    `deadline()`), and borrows nothing the refill brings after it; when `least` would come after it, takes what
    one token's wait brings; OutOfTime (nothing held) when even that comes too late."""
    if until is None:
        until = _deadline.get()
    least = max(1, min(least, want))
    b = bucket(region, kind)
    hold_id = uuid.uuid4().hex
    while True:
        now = time.monotonic()
        horizon = borrow_seconds if until is None else max(0.0, min(borrow_seconds, until - now))
        answer = b.call(HOLD, want, least, horizon * b.rate, hold_id)
        if answer.granted:
            return Reservation(region, kind, answer.granted, hold_id)
        if _too_late(answer, until):
            if least > 1:
                least = 1
                continue
            raise _out_of_time(region, kind)
        _wait(answer)


def acquire(region: str, kind: str, *, until: float | None = None) -> None:
    """One token for one call about to be sent: from the running batch's reservation (`spending()`) when it has
    one left, else from what no reservation holds, waiting for the refill if need be; OutOfTime (nothing taken)
    when the token comes after `until` (default: the running pass's deadline, see `deadline()`)."""
    if until is None:
        until = _deadline.get()
    held = _reservation.get()
    if held is not None and held.spend(region, kind, until):
        return
    b = bucket(region, kind)
    while True:
        answer = b.call(TAKE)
        if answer.granted:
            return
        if _too_late(answer, until):
            raise _out_of_time(region, kind)
        _wait(answer)


def _too_late(answer: Answer, until: float | None) -> bool:
    return until is not None and time.monotonic() + answer.wait > until


def _out_of_time(region: str, kind: str) -> OutOfTime:
    return OutOfTime(f"no EC2 {kind} token for {region} before the pass deadline")


def _wait(answer: Answer) -> None:
    """Until the refill brings what was asked for, plus a little jitter, so that the workers waiting for the same
    refill do not all ask at once."""
    time.sleep(answer.wait * (1 + random.random() / 10))  # noqa: S311 (jitter, not cryptography)


def available(region: str, kind: str) -> float:
    """The tokens there now that calls may take (a look: none taken)."""
    b = bucket(region, kind)
    return max(0.0, b.call(LOOK).free - headroom(b.burst))


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
