"""A fault-injecting HTTP proxy for the EC2 emulator, on loopback: AWS as it behaves on a bad day.

Point boto3 at it with ``AWS_ENDPOINT_URL_EC2=<proxy url>``; it forwards to moto, except when its seeded
dice say otherwise. Per request, in this order of precedence:

- ``throttle``: HTTP 503 ``RequestLimitExceeded`` (the EC2 XML error body botocore parses);
- ``internal``: HTTP 500 ``InternalError``, nothing forwarded;
- ``timeout``: the connection is held without an answer for ``hold_seconds`` (past the client's read
  timeout, bounded), then closed; nothing forwarded;
- ``after``: the call is forwarded (the mutation happens in moto), then the client gets a 500
  ``InternalError`` anyway: the most treacherous failure, where a retry finds the work already done.

The dice are one ``random.Random(seed)``: the same seed and the same order of requests give the same
faults. ``counts`` says what was injected; ``actions`` limits the faults to some EC2 actions.
Run alone: ``python -m sandbox.faults --upstream http://127.0.0.1:5055 --port 5056 --throttle 0.1``.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import random
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from sandbox.ports import LoopbackHTTPServer, free_port

KINDS = ("throttle", "internal", "timeout", "after")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te",
               "trailer", "upgrade"}


@dataclass(frozen=True)
class FaultRates:
    """Probability per request of each fault (their sum at most 1), and how long a timeout holds."""

    throttle: float = 0.0
    internal: float = 0.0
    timeout: float = 0.0
    after: float = 0.0
    # boto3's read timeout in eipdash is 10 s: hold a little longer, so the client gives up first.
    hold_seconds: float = 11.0
    # Only these EC2 actions get faults (None: every action).
    actions: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if min(self.throttle, self.internal, self.timeout, self.after) < 0 or self.total() > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")

    def total(self) -> float:
        return self.throttle + self.internal + self.timeout + self.after


def error_body(code: str, message: str) -> bytes:
    """EC2's query-protocol error document, as botocore expects it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


class Dice:
    """The seeded decision per request; pure apart from its own RNG, so its sequence is testable."""

    def __init__(self, seed: int, rates: FaultRates) -> None:
        self.rates = rates
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def roll(self, action: str) -> str | None:
        with self._lock:
            # Always draw, so that the sequence does not depend on which actions are exempt.
            draw = self._rng.random()
        if self.rates.actions is not None and action not in self.rates.actions:
            return None
        edge = 0.0
        for kind in KINDS:
            edge += getattr(self.rates, kind)
            if draw < edge:
                return kind
        return None


class LoopbackProxy:
    """A proxy on 127.0.0.1 in front of `upstream`, served by daemon threads of this process (one per
    connection: calls run concurrently). Subclasses name their request handler class (`handler`), which
    finds the proxy as `self.proxy`."""

    handler: type[BaseHTTPRequestHandler]
    thread_name = "loopback-proxy"

    def __init__(self, upstream: str, *, port: int | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.port = port or free_port()
        self._stopping = threading.Event()  # set on stop: calls held or waiting out a latency answer at once
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        server = LoopbackHTTPServer(("127.0.0.1", self.port), type("Handler", (self.handler,), {"proxy": self}))
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FaultProxy(LoopbackProxy):
    """The fault proxy. ``enabled`` pauses the faults (not the proxy)."""

    thread_name = "ec2-fault-proxy"

    def __init__(self, upstream: str, *, seed: int = 1, rates: FaultRates | None = None,
                 port: int | None = None) -> None:
        super().__init__(upstream, port=port)
        self.handler = _Handler
        self.dice = Dice(seed, rates or FaultRates())
        self.enabled = True
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_action: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self._count_lock = threading.Lock()

    @property
    def injected(self) -> int:
        with self._count_lock:
            return sum(self.counts.values())

    def _decide(self, action: str) -> str | None:
        kind = self.dice.roll(action) if self.enabled else None
        with self._count_lock:
            self.requests += 1
            if kind is not None:
                self.counts[kind] += 1
                self.by_action[action] += 1
        return kind

    def forward(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        return forward(self.upstream_host, self.upstream_port, method, path, headers, body)


def forward(host: str, port: int, method: str, path: str, headers: dict[str, str],
            body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request to the upstream (moto), on a fresh connection: (status, headers, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


class ProxyHandler(BaseHTTPRequestHandler):
    """What the sandbox's EC2 proxies share: reading a query-protocol request and answering it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        raise NotImplementedError

    def _read_action(self, method: str) -> tuple[bytes, str]:
        """The request body and its EC2 action (``Action=`` in the form body, or the query string)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        query = urlsplit(self.path).query
        fields = parse_qs(body.decode("utf-8", "replace")) if method == "POST" else parse_qs(query)
        return body, (fields.get("Action") or [""])[0]

    def _upstream_headers(self, host: str, port: int) -> dict[str, str]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
        headers["Host"] = f"{host}:{port}"
        return headers

    def _relay(self, status: int, upstream_headers: list[tuple[str, str]], payload: bytes) -> None:
        self._answer(status, payload, [(k, v) for k, v in upstream_headers if k.lower() not in _HOP_BY_HOP])

    def _answer(self, status: int, payload: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        sent = {k.lower() for k, _ in headers or []}
        for key, value in headers or []:
            self.send_header(key, value)
        if "content-type" not in sent:
            self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Handler(ProxyHandler):
    proxy: FaultProxy

    def _handle(self, method: str) -> None:
        body, action = self._read_action(method)
        kind = self.proxy._decide(action)
        if kind == "throttle":
            self._answer(503, error_body("RequestLimitExceeded", "Request limit exceeded."))
            return
        if kind == "internal":
            self._answer(500, error_body("InternalError", "An internal error has occurred."))
            return
        if kind == "timeout":
            # Hold the connection past the client's read timeout, then drop it without a word.
            self.proxy._stopping.wait(self.proxy.dice.rates.hold_seconds)
            self.close_connection = True
            return
        headers = self._upstream_headers(self.proxy.upstream_host, self.proxy.upstream_port)
        try:
            status, upstream_headers, payload = self.proxy.forward(method, self.path, headers, body)
        except OSError as error:
            self._answer(502, error_body("InternalError", f"upstream unreachable: {error}"))
            return
        if kind == "after":
            self._answer(500, error_body("InternalError", "An internal error has occurred."))
            return
        self._relay(status, upstream_headers, payload)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fault-injecting proxy in front of the EC2 emulator.")
    parser.add_argument("--upstream", required=True, help="the EC2 emulator, e.g. http://127.0.0.1:5055")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    for kind in KINDS:
        parser.add_argument(f"--{kind}", type=float, default=0.0, help=f"probability of a {kind} fault per request")
    parser.add_argument("--hold-seconds", type=float, default=11.0)
    args = parser.parse_args(argv)
    rates = FaultRates(throttle=args.throttle, internal=args.internal, timeout=args.timeout, after=args.after,
                       hold_seconds=args.hold_seconds)
    proxy = FaultProxy(args.upstream, seed=args.seed, rates=rates, port=args.port or None)
    try:
        proxy.start()
        print(f"AWS_ENDPOINT_URL_EC2={proxy.url}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(f"faults injected: {proxy.injected} of {proxy.requests} requests {dict(proxy.counts)}", flush=True)


if __name__ == "__main__":
    main()
