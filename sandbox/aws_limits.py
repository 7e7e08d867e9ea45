"""EC2's latency and request rate limits, as a loopback proxy in front of the EC2 emulator (moto).

moto answers in about a millisecond and never throttles. Real EC2 takes tens of milliseconds per call and
throttles each account per region with token buckets (EC2 developer guide, "Request throttling for the
Amazon EC2 API", request token bucket sizes and refill rates). This proxy adds both, so that a benchmark or a
test sees what a burst meets on AWS:

- **latency**: every call (throttled or not) is answered ``latency_ms`` later than moto would answer it;
- **throttle**: each EC2 action has its own bucket per region, as on AWS ("each API is evaluated
  individually"), sized by the action's category:

  - non-mutating (``Describe*``, ``Get*``, ``List*``, ``Search*``): 100 tokens, refilled 20 per second;
  - mutating (every other action: ``AssociateAddress``, ``DisassociateAddress``, ``AllocateAddress``,
    ``ReleaseAddress``, ...): 50 tokens, refilled 5 per second.

  A bucket starts full and refills continuously up to its size. A call takes one token; when its bucket
  has none, the call is answered HTTP 503 ``RequestLimitExceeded`` (EC2's XML error body) without reaching
  moto, and takes no token. What the proxy does not model: AWS's separate "unfiltered and unpaginated"
  category, the resource-token buckets of RunInstances and friends, and limit increases. The sizes are
  :class:`BucketSizes`, overridable (tests use tiny buckets).

The region is the one in the request's SigV4 credential scope (``Credential=KEY/DATE/REGION/ec2/...``).

The proxy counts, per action, the calls it received and those it throttled, and the largest number of
calls in flight at once; :meth:`LimitsProxy.stats` returns them, ``GET /_limits/stats`` serves them as JSON
(for a benchmark in another process), ``POST /_limits/reset`` zeroes them and fills the buckets again.

In-process: ``LimitsProxy(upstream_url, latency_ms=80, throttle=True).start()``, or
``Ec2Emulator(latency_ms=80, throttle=True)`` (sandbox/ec2_emulator.py), which starts moto behind one.
Alone: ``python -m sandbox.aws_limits --upstream http://127.0.0.1:5055 --port 5056 --latency-ms 80 --throttle``.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from sandbox.faults import LoopbackProxy, ProxyHandler, error_body, forward

NON_MUTATING_PREFIXES = ("Describe", "Get", "List", "Search")
_REGION_IN_CREDENTIAL = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/ec2/")
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class BucketSizes:
    """Tokens and refill per second of each category's bucket (one bucket per action and region)."""

    mutating_tokens: float = 50
    mutating_refill_per_s: float = 5
    non_mutating_tokens: float = 100
    non_mutating_refill_per_s: float = 20


def is_mutating(action: str) -> bool:
    return not action.startswith(NON_MUTATING_PREFIXES)


def region_of(authorization: str | None) -> str:
    """The region of a SigV4 ``Authorization`` header's credential scope (``us-east-1`` when unsigned)."""
    match = _REGION_IN_CREDENTIAL.search(authorization or "")
    return match.group(1) if match else DEFAULT_REGION


class TokenBucket:
    """EC2's token bucket: starts full, refills continuously up to its size; a call takes one token.

    Not thread-safe by itself: the proxy takes its lock around it. ``clock`` is injectable for tests.
    """

    def __init__(self, tokens: float, refill_per_s: float, clock: Any = time.monotonic) -> None:
        self.size = tokens
        self.refill_per_s = refill_per_s
        self._clock = clock
        self.tokens = tokens
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.size, self.tokens + (now - self._at) * self.refill_per_s)
        self._at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class LimitsProxy(LoopbackProxy):
    """The limits proxy (one thread per connection: calls run concurrently)."""

    thread_name = "ec2-limits-proxy"

    def __init__(self, upstream: str, *, latency_ms: float = 0, throttle: bool = False,
                 sizes: BucketSizes | None = None, port: int | None = None) -> None:
        super().__init__(upstream, port=port)
        self.handler = _Handler
        self.latency_s = latency_ms / 1000
        self.throttle = throttle
        self.sizes = sizes or BucketSizes()
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._calls: collections.Counter[str] = collections.Counter()
        self._throttled: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self._max_in_flight = 0

    # --- counting and the buckets -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the proxy saw since it started or was last reset (JSON-ready)."""
        with self._lock:
            return {
                "calls": dict(self._calls),
                "throttled": dict(self._throttled),
                "calls_total": sum(self._calls.values()),
                "throttled_calls": sum(self._throttled.values()),
                "reads": sum(n for action, n in self._calls.items() if not is_mutating(action)),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "latency_ms": self.latency_s * 1000,
                "throttle": self.throttle,
                "sizes": asdict(self.sizes),
                "upstream": self.upstream,
            }

    def reset(self) -> None:
        """Zero the counters and fill every bucket again."""
        with self._lock:
            self._calls.clear()
            self._throttled.clear()
            self._max_in_flight = self._in_flight
            self._buckets.clear()

    def _admit(self, action: str, region: str) -> bool:
        """Count the call; False when its bucket is empty (the call is throttled)."""
        with self._lock:
            self._calls[action] += 1
            if not self.throttle:
                return True
            bucket = self._buckets.get((region, action))
            if bucket is None:
                if is_mutating(action):
                    bucket = TokenBucket(self.sizes.mutating_tokens, self.sizes.mutating_refill_per_s)
                else:
                    bucket = TokenBucket(self.sizes.non_mutating_tokens, self.sizes.non_mutating_refill_per_s)
                self._buckets[(region, action)] = bucket
            if bucket.take():
                return True
            self._throttled[action] += 1
            return False

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(ProxyHandler):
    proxy: LimitsProxy

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/_limits/"):
            self._control(method, path)
            return
        body, action = self._read_action(method)
        proxy = self.proxy
        proxy._enter()
        try:
            admitted = proxy._admit(action, region_of(self.headers.get("Authorization")))
            started = time.monotonic()
            if admitted:
                headers = self._upstream_headers(proxy.upstream_host, proxy.upstream_port)
                try:
                    status, upstream_headers, payload = forward(proxy.upstream_host, proxy.upstream_port,
                                                                method, self.path, headers, body)
                except OSError as error:
                    status, upstream_headers = 502, []
                    payload = error_body("InternalError", f"upstream unreachable: {error}")
            else:
                status, upstream_headers = 503, []
                payload = error_body("RequestLimitExceeded", "Request limit exceeded.")
            # The round trip of a real EC2 call: moto's own time counts towards it.
            proxy._stopping.wait(max(0.0, proxy.latency_s - (time.monotonic() - started)))
        finally:
            proxy._leave()
        self._relay(status, upstream_headers, payload)

    def _control(self, method: str, path: str) -> None:
        if method == "GET" and path == "/_limits/stats":
            self._answer(200, json.dumps(self.proxy.stats()).encode(), [("Content-Type", "application/json")])
        elif method == "POST" and path == "/_limits/reset":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.proxy.reset()
            self._answer(200, b"{}", [("Content-Type", "application/json")])
        else:
            self._answer(404, b'{"error": "unknown"}', [("Content-Type", "application/json")])


def read_stats(url: str, timeout: float = 10) -> dict[str, Any]:
    """``GET /_limits/stats`` of a proxy, e.g. one running in another process."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/_limits/stats", timeout=timeout) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def reset_stats(url: str, timeout: float = 10) -> None:
    import urllib.request

    request = urllib.request.Request(f"{url}/_limits/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EC2's latency and rate limits in front of the EC2 emulator.")
    parser.add_argument("--upstream", required=True, help="the EC2 emulator, e.g. http://127.0.0.1:5055")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--throttle", action="store_true", help="enforce EC2's request token buckets")
    args = parser.parse_args(argv)
    proxy = LimitsProxy(args.upstream, latency_ms=args.latency_ms, throttle=args.throttle, port=args.port or None)
    try:
        proxy.start()
        print(f"AWS_ENDPOINT_URL_EC2={proxy.url}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(json.dumps(proxy.stats()), flush=True)


if __name__ == "__main__":
    main()
