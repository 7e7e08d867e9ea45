"""One region-wide DescribeAddresses per region per beat tick, shared by the passes of that region's specs.

Every pass needs the region's whole address list (its pool, and the non-pool EIPs already on a node). With
20 specs in one region, 20 passes a tick used to make 20 identical calls. Now the first pass of a tick
reads, writes the ElasticIP and UnmanagedAddress rows, and then publishes the reading (in Redis, or in this
process without REDIS_URL) with the region's sequence number (RegionSequence) read right before the call.

Readings are ordered by that sequence, never by clocks: the clocks of two hosts disagree, and a reader whose
clock runs ahead would make an old reading look new. Every change eipdash makes to AWS bumps the sequence
right before and right after it (workers/pass_context.py), and the spec keeps the number of its last bump
(`SpecFence.fresh_from_seq`). A reading taken at that number or later was taken after the spec's last change
had returned, so it shows it: only such a reading is fresh for the spec. While one pass reads, the others of
the region wait briefly for its reading instead of reading too (single flight).

Why a reading shared this way is safe, although it can be up to one tick old for the other specs' EIPs:
- nothing is done on the reading alone: before the executor associates, it reads the target private IPs
  again, and before it closes a claim or releases, it reads the allocation again; a step that makes a node
  schedulable (a taint lift) rests on a targeted look taken after the reading (workers/steps/ready.py);
- the database claims (one open Assignment per EIP and per node) stop two passes from handing out the
  same EIP or giving one node two, whatever each of them read;
- associations go out with AllowReassociation=False, so EC2 itself refuses to move an EIP that is on
  another ENI, which a stale "free" reading could otherwise suggest.
docs/reliability.md says the same.

No boto3 here: the EC2 call goes through workers/ec2.py's Ec2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from django.conf import settings
from redis.exceptions import RedisError

from pools import redis_keys, selectors, services

from .ec2 import Address, Ec2

log = logging.getLogger(__name__)

# A reading older than this is of no use to anyone (a pass needs one newer than its spec's last pass, and
# passes run every few seconds): let Redis drop it.
READING_TTL_SECONDS = 300
# How long a pass waits for the reading another pass of the region is taking before reading itself.
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.02
# The single-flight marker outlives a slow DescribeAddresses, and frees itself if its holder dies.
FLIGHT_SECONDS = 15


@dataclass(frozen=True)
class Reading:
    """The region's addresses as one DescribeAddresses showed them, and the region's sequence number right
    before the call: every change whose closing bump came before that number shows in it."""

    seq: int
    addresses: list[Address]
    # The region's pool selection (`selection_key`) its ElasticIP and UnmanagedAddress rows were written for.
    saved_for: str
    # True: this pass made the call (and wrote the rows); False: another pass's reading, reused.
    own: bool = True
    # The reading's number among the region's DescribeAddresses calls, taken as it started
    # (services.region_reading_number): a save of an older reading after a newer one writes nothing.
    number: int = 0


def selection_key(selectors: list[tuple[int, str, str | None]]) -> str:
    """A short key for the region's specs and their tag selectors: a reading written under another
    selection (a spec added or its selector changed since) must be written again by its user."""
    return hashlib.sha1(repr(sorted(selectors, key=repr)).encode()).hexdigest()[:16]


def region_addresses(ec2: Ec2, *, at_least: int | None, selection: str,
                     save: Callable[[list[Address], int], None]) -> Reading:
    """The region's addresses: a published reading taken at sequence number `at_least` or later (this spec's
    last change to AWS), else a new one, which `save(addresses, number)` writes to the DB before it is shared.

    `at_least` None: always a new reading (a pass that needs its own)."""
    store = _store()
    key = _key(ec2)
    if at_least is not None:
        shared = store.get(key, at_least=at_least)
        if shared is None:
            if store.begin(key):
                try:
                    return _take(ec2, store, key, selection, save)
                finally:
                    store.end(key)
            # Another pass of the region is reading right now: wait for its reading.
            shared = _wait_for(store, key, at_least)
        if shared is not None:
            return Reading(shared.seq, shared.addresses, shared.saved_for, own=False, number=shared.number)
    return _take(ec2, store, key, selection, save)


def _take(ec2: Ec2, store: _Store, key: str, selection: str,
          save: Callable[[list[Address], int], None]) -> Reading:
    # Read before the call: whatever AWS answers reflects at least every change whose bump came before.
    seq = selectors.region_seq_current(region=ec2.region)
    number = services.region_reading_number(region=ec2.region)
    addresses = ec2.list_all_addresses()
    save(addresses, number)
    reading = Reading(seq, addresses, selection, number=number)
    store.put(key, reading)
    return reading


def _wait_for(store: _Store, key: str, at_least: int) -> Reading | None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        shared = store.get(key, at_least=at_least)
        if shared is not None:
            return shared
        if not store.busy(key):
            return None  # the other pass is done but published nothing newer (it failed): read
        time.sleep(POLL_SECONDS)
    return None


def _key(ec2: Ec2) -> str:
    # The endpoint too: two EC2 endpoints (a test's emulator beside another's) never share a reading.
    endpoint = getattr(getattr(ec2.client, "meta", None), "endpoint_url", "") or ""
    return f"{ec2.region}|{endpoint}"


# ---- where readings are published


def _encode(reading: Reading) -> str:
    rows = [[a.allocation_id, a.public_ip, a.tags, a.association_id, a.eni_id, a.private_ip, a.instance_id,
             a.public_ipv4_pool] for a in reading.addresses]
    return json.dumps({"seq": reading.seq, "saved_for": reading.saved_for, "number": reading.number, "rows": rows},
                      separators=(",", ":"))


def _decode(raw: str | bytes) -> Reading:
    data: dict[str, Any] = json.loads(raw)
    # A reading published by an older version has no eighth column (PublicIpv4Pool).
    addresses = [Address(allocation_id=r[0], public_ip=r[1], tags=r[2], association_id=r[3], eni_id=r[4],
                         private_ip=r[5], instance_id=r[6], public_ipv4_pool=r[7] if len(r) > 7 else "")
                 for r in data["rows"]]
    return Reading(int(data["seq"]), addresses, data["saved_for"], number=int(data.get("number", 0)))


class _Store:
    def get(self, key: str, at_least: int | None = None) -> Reading | None:
        """The published reading, if there is one (taken at sequence number `at_least` or later, when given)."""
        raise NotImplementedError

    def put(self, key: str, reading: Reading) -> None:
        raise NotImplementedError

    def begin(self, key: str) -> bool:
        """Mark a reading of this region under way; False when another pass has marked it."""
        raise NotImplementedError

    def busy(self, key: str) -> bool:
        raise NotImplementedError

    def end(self, key: str) -> None:
        raise NotImplementedError


class _RedisStore(_Store):
    """Shared by every worker. Redis trouble never fails a pass: it reads EC2 itself instead.

    The sequence number a reading was taken at is kept beside it, so that a pass that needs a newer one, and a
    publisher that must not replace a newer one, look at a few bytes rather than the whole region's addresses."""

    def __init__(self, url: str) -> None:
        self.client = _redis(url)
        self.token = f"{id(self)}:{threading.get_ident()}:{time.monotonic_ns()}"

    def stamp(self, key: str) -> int | None:
        raw = self.client.get(redis_keys.reading_seq(key))
        return int(raw) if raw else None

    def get(self, key: str, at_least: int | None = None) -> Reading | None:
        try:
            if at_least is not None:
                stamp = self.stamp(key)
                if stamp is None or stamp < at_least:
                    return None
            raw = self.client.get(redis_keys.reading(key))
        except RedisError as exc:
            log.warning("shared address reading not available (%s): reading EC2", exc)
            return None
        return _decode(raw) if raw else None

    def put(self, key: str, reading: Reading) -> None:
        try:
            current = self.stamp(key)
            # Never replace a newer reading by an older one (two passes read at once after a wait ran out).
            if current is None or current <= reading.seq:
                with self.client.pipeline() as pipe:  # MULTI/EXEC: the stamp and its reading together
                    pipe.set(redis_keys.reading(key), _encode(reading), ex=READING_TTL_SECONDS)
                    pipe.set(redis_keys.reading_seq(key), reading.seq, ex=READING_TTL_SECONDS)
                    pipe.execute()
        except RedisError as exc:
            log.warning("shared address reading not published (%s)", exc)

    def begin(self, key: str) -> bool:
        try:
            return bool(self.client.set(redis_keys.reading_flight(key), self.token, nx=True,
                                        ex=FLIGHT_SECONDS))
        except RedisError:
            return True

    def busy(self, key: str) -> bool:
        try:
            return bool(self.client.exists(redis_keys.reading_flight(key)))
        except RedisError:
            return False

    def end(self, key: str) -> None:
        try:
            flight = redis_keys.reading_flight(key)
            if self.client.get(flight) == self.token.encode():
                self.client.delete(flight)
        except RedisError:
            pass  # it expires on its own


class _LocalStore(_Store):
    """Without Redis: shared by the passes of this process only."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readings: dict[str, Reading] = {}
        self.reading: set[str] = set()

    def get(self, key: str, at_least: int | None = None) -> Reading | None:
        with self.lock:
            reading = self.readings.get(key)
        return None if reading is None or (at_least is not None and reading.seq < at_least) else reading

    def put(self, key: str, reading: Reading) -> None:
        with self.lock:
            current = self.readings.get(key)
            if current is None or current.seq <= reading.seq:
                self.readings[key] = reading

    def begin(self, key: str) -> bool:
        with self.lock:
            if key in self.reading:
                return False
            self.reading.add(key)
            return True

    def busy(self, key: str) -> bool:
        with self.lock:
            return key in self.reading

    def end(self, key: str) -> None:
        with self.lock:
            self.reading.discard(key)


_local = _LocalStore()


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _store() -> _Store:
    url = settings.REDIS_URL or None
    return _RedisStore(url) if url else _local


def forget() -> None:
    """Drop this process's readings (tests that change AWS behind the passes' back)."""
    with _local.lock:
        _local.readings.clear()
        _local.reading.clear()
