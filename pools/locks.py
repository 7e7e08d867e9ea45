"""Single flight per launch spec, and the fencing number that keeps a stale holder's writes out.

The lease (Redis) gives liveness: one pass per spec at a time, and a worker that dies mid-pass (SIGKILL, OOM,
node loss) frees its spec within EIPDASH_LEASE_SECONDS (10 s by default). A thread of the holder renews it
every third of that, so a pass may take as long as it needs.

The fencing number (the database) gives safety. A holder can stop for longer than its lease (a GC pause,
SIGSTOP, a migrated VM) and then go on exactly where it was; a Redis failover can drop a lease while its
holder still counts on it. So every acquisition takes a number from the database that only grows
(`SpecFence.number`), and the holder carries it:
- every database write of a pass runs in `Lease.fenced()`: one transaction that first proves the spec's number
  is still this holder's, so a newer holder's number refuses it, whatever the stale holder read or believes;
- every Kubernetes write carries it in the node's `eipdash.io/fence` annotation, compared and set in the same
  resourceVersion-conditioned patch (workers/kube.py), so the API server refuses a stale holder's write;
- AWS has no conditional write: every attempt to change it calls `Lease.check(needed)` right before it is sent
  (after its wait for an EC2 budget token), which proves the lease is still ours and holds for the longest the
  attempt can take, renewing it on the spot if need be (workers/ec2.py). docs/reliability.md gives the argument.

Without a Redis URL (a one-off command on a laptop) there is no lease to take, but the fencing number still
orders the holders: a second pass that starts fences out the first one's writes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache

import redis
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError

from . import redis_keys
from .counters import next_value

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This process no longer holds the spec's lease: another pass may be running. Write nothing more."""


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def lease_key(spec_id: int) -> str:
    return redis_keys.lease(spec_id)


# Atomic on Redis: take the key if free; push its expiry back only while it holds our token; delete it only
# while it holds our token (a lease that expired and was taken by another holder is never touched).
_ACQUIRE = "return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0"
# A renewal also notes, under the holder's fencing number, when Redis renewed it (its own clock, one for every
# worker): KEYS[2] is the spec's renewals hash, ARGV[3] the fencing number ("" for a lease of no spec).
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  redis.call('hset', KEYS[2], ARGV[3], t[1] .. '.' .. string.format('%06d', t[2]))
  redis.call('expire', KEYS[2], 3600)
end
return 1
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# How often a holder that waits for a busy lease tries again.
_WAIT_POLL_SECONDS = 0.1


def fence_take(spec_id: int) -> int:
    """The next fencing number of the spec (1, 2, ...): every later holder's number is higher."""
    from .models import SpecFence

    return next_value(SpecFence, key={"spec_id": spec_id}, field="number")


class Lease:
    """One holder's lease on one key, and its fencing number (when it is a spec's lease)."""

    def __init__(self, key: str, *, seconds: float, url: str | None, spec_id: int | None = None) -> None:
        self.key = key
        self.seconds = float(seconds)
        self.spec_id = spec_id
        self.fence = 0  # the fencing number, once acquired (0: not a spec's lease)
        self._renewals_key = redis_keys.renewals(spec_id) if spec_id is not None else key + ":renewed"
        self._redis = _client(url) if url else None
        self._token = uuid.uuid4().hex
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._valid_lock = threading.Lock()
        self._valid_until = 0.0  # monotonic time until which the last acquire/renewal holds for sure
        self.held = False

    @property
    def redis_backed(self) -> bool:
        return self._redis is not None

    def acquire(self, wait_seconds: float = 0.0) -> bool:
        if self._redis is not None and not self._take(wait_seconds):
            return False
        self.held = True
        if self.spec_id is not None:
            self.fence = fence_take(self.spec_id)
            self.renew()  # notes this holder's first renewal under its number
        if self._redis is not None:
            self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.key}", daemon=True)
            self._thread.start()
        return True

    def _take(self, wait_seconds: float) -> bool:
        assert self._redis is not None
        give_up = time.monotonic() + wait_seconds
        while True:
            started = time.monotonic()
            if self._redis.eval(_ACQUIRE, 1, self.key, self._token, int(self.seconds * 1000)):
                self._valid_until = started + self.seconds
                return True
            if time.monotonic() >= give_up:
                return False
            time.sleep(_WAIT_POLL_SECONDS)

    def renew(self) -> bool:
        """Push the expiry back to a full lease; False (and lost for good) when it is not ours any more."""
        if self._redis is None:
            return True
        if self._lost.is_set():
            return False
        started = time.monotonic()
        try:
            renewed = self._redis.eval(_RENEW, 2, self.key, self._renewals_key, self._token,
                                       int(self.seconds * 1000), str(self.fence) if self.fence else "")
        except RedisError as exc:
            # Redis may be back before the lease runs out; until then the lease is still ours.
            if time.monotonic() >= self.valid_until:
                self._lose(f"Redis did not answer the renewal in time ({exc})")
                return False
            return True
        if not renewed:
            self._lose("it expired or another holder took it")
            return False
        with self._valid_lock:
            self._valid_until = max(self._valid_until, started + self.seconds)
        return True

    def server_time(self) -> datetime | None:
        """Redis's clock (the one the leases expire on, shared by every worker whatever its host's clock says);
        None without Redis, or when it does not answer."""
        if self._redis is None:
            return None
        try:
            seconds, micros = self._redis.time()
        except RedisError:
            return None
        return datetime.fromtimestamp(seconds + micros / 1_000_000, UTC)

    def last_renewals(self, fences: set[int]) -> dict[int, datetime]:
        """When (Redis's clock) the holders with these fencing numbers last renewed the spec's lease, where
        Redis still knows it (a failover or a restart may have lost it)."""
        if self._redis is None or not fences:
            return {}
        ordered = sorted(fences)
        try:
            found = self._redis.hmget(self._renewals_key, [str(f) for f in ordered])
        except RedisError:
            return {}
        return {fence: datetime.fromtimestamp(float(raw), UTC) for fence, raw in zip(ordered, found, strict=True)
                if raw is not None}

    @property
    def valid_until(self) -> float:
        with self._valid_lock:
            return self._valid_until

    def check(self, needed: float = 0.0) -> None:
        """Raise LeaseLost unless this process provably holds the lease, and will for `needed` more seconds
        (renewing it now if it would not): right before each write, `needed` being the longest the write can
        take."""
        if self._redis is None:
            return
        if not self.held or self._lost.is_set():
            raise LeaseLost(f"lease {self.key} lost")
        if time.monotonic() >= self.valid_until:
            self._lose("not renewed within its time")
            raise LeaseLost(f"lease {self.key} lost: not renewed within {self.seconds:g}s")
        # A renewal proves that the key still holds our token, and starts a full lease from now.
        if not self.renew():
            raise LeaseLost(f"lease {self.key} lost: it expired and may be held by another pass")
        if self.valid_until - time.monotonic() < needed:
            raise LeaseLost(f"lease {self.key}: a write of up to {needed:g}s would outlast it")

    @contextmanager
    def fenced(self) -> Iterator[None]:
        """One transaction whose writes land only while this holder's fencing number is the spec's latest:
        a newer holder has taken a higher one, and this holder's writes are refused (LeaseLost)."""
        from .models import SpecFence

        with transaction.atomic():
            if self.spec_id is not None and self.fence:
                # An UPDATE, not a SELECT: it holds the row until the commit, so a newer holder's number waits
                # for these writes instead of slipping in between the check and them.
                if not SpecFence.objects.filter(spec_id=self.spec_id, number=self.fence).update(number=self.fence):
                    self._lose("a newer holder took the spec (its fencing number is past ours)")
                    raise LeaseLost(f"lease {self.key}: fencing number {self.fence} is no longer the spec's latest")
            yield

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.seconds)
        was_held, self.held = self.held, False
        if self._redis is None or not was_held:
            return
        try:
            if not self._redis.eval(_RELEASE, 1, self.key, self._token):
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


def spec_lease_for(spec_id: int) -> Lease:
    return Lease(lease_key(spec_id), seconds=settings.EIPDASH_LEASE_SECONDS, url=settings.REDIS_URL or None,
                 spec_id=spec_id)


@contextmanager
def spec_lease(spec_id: int, *, wait_seconds: float = 0.0) -> Iterator[Lease | None]:
    """The spec's lease while the block runs, or None when another process holds it (after waiting up
    to `wait_seconds`). Released on exit, whatever happens inside."""
    lease = spec_lease_for(spec_id)
    if not lease.acquire(wait_seconds):
        yield None
        return
    try:
        yield lease
    finally:
        lease.release()


def lease_taken(spec_id: int) -> bool:
    """Whether some holder has the spec's lease right now (False without Redis, or when it does not answer)."""
    if not settings.REDIS_URL:
        return False
    try:
        return bool(_client(settings.REDIS_URL).exists(lease_key(spec_id)))
    except RedisError:
        return False


def ask_rerun(spec_id: int) -> None:
    """A pass found the spec's lease taken and did nothing: ask the holder for one more pass when it ends.

    The change that sent this pass (a node the watch just saw) may have come after the holder read the
    world; without this, it would wait for the next beat tick. Best effort: without Redis there is no lease
    to find taken, and a Redis error only costs that wait."""
    if not settings.REDIS_URL:
        return
    try:
        _client(settings.REDIS_URL).set(redis_keys.rerun(spec_id), 1,
                                        ex=max(60, settings.EIPDASH_RECONCILE_SECONDS * 12))
    except RedisError as exc:
        log.debug("spec %s: rerun request not recorded: %s", spec_id, exc)


def take_rerun(spec_id: int) -> bool:
    """True once after ask_rerun (consumed): the caller, whose lease just ended, has one more pass run."""
    if not settings.REDIS_URL:
        return False
    try:
        return bool(_client(settings.REDIS_URL).delete(redis_keys.rerun(spec_id)))
    except RedisError as exc:
        log.debug("spec %s: rerun request not read: %s", spec_id, exc)
        return False


def take_tick() -> bool:
    """True for the first of the beat's reconcile_all ticks in half a reconcile interval, on Redis's clock.

    The ticks carry no Celery `expires`: that is a time on the beat's host, which a worker compares with its own
    clock, so a worker running seconds ahead dropped every tick (and one running behind ran stale ones). Ticks
    that queued up while no worker ran arrive together; the first does the work, the others nothing. Without
    Redis, or when it does not answer, every tick runs: the safety net matters more than a few extra passes."""
    if not settings.REDIS_URL:
        return True
    try:
        gate = max(1, int(settings.EIPDASH_RECONCILE_SECONDS * 1000 / 2))
        return bool(_client(settings.REDIS_URL).set(redis_keys.beat_tick(), 1, nx=True, px=gate))
    except RedisError as exc:
        log.debug("beat tick gate not read: %s", exc)
        return True


@contextmanager
def spec_lock(spec_id: int, *, wait_seconds: float = 0.0) -> Iterator[bool]:
    """The same lease for callers that only need to know whether they got it (spec edits and deletes)."""
    with spec_lease(spec_id, wait_seconds=wait_seconds) as lease:
        yield lease is not None
