"""The worker's own /metrics port, for deployments where web and workers do not share a host.

In Kubernetes every pod has its own ``PROMETHEUS_MULTIPROC_DIR`` (an emptyDir): the web's /metrics cannot
see a worker pod's counters. With ``EIPDASH_METRICS_PORT`` set, the Celery worker's main process serves
the counters of all its child processes (the pool counts where the passes run) on that port, on
``EIPDASH_METRICS_ADDR`` (default 127.0.0.1; the manifests set 0.0.0.0). Only the process counters: the
pool gauges come from the database through the web's /metrics, once, not once per worker.

Who may read it, as on the web's /metrics: with ``EIPDASH_METRICS_TOKEN`` set, only a request that carries it
as a bearer token (compared in constant time), wherever it comes from. Without a token the web asks for a
login, which this port cannot: it answers only when bound to a loopback address (nothing off the host, or the
pod, can connect), and bound to any other address it answers 401 to everyone, and logs why.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY

from pools.metrics import multiproc_dir

log = logging.getLogger(__name__)
_started = False
REALM = 'Bearer realm="eipdash metrics"'


def is_loopback(addr: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; 0.0.0.0, :: and every other address are reachable from elsewhere."""
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def guarded(app: Callable[..., Iterable[bytes]], token: str | None, addr: str) -> Callable[..., Iterable[bytes]]:
    """`app` behind the token (or, without one, behind the loopback bind): 401 with WWW-Authenticate otherwise."""
    open_without_token = token is None and is_loopback(addr)

    def refuse(start_response: Callable[..., Any], why: bytes) -> Iterable[bytes]:
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", REALM)])
        return [why]

    def guarded_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if open_without_token:
            return app(environ, start_response)
        if token is None:
            return refuse(start_response, b"unauthorized: set EIPDASH_METRICS_TOKEN to serve metrics off this host\n")
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return refuse(start_response, b"unauthorized\n")
        return app(environ, start_response)

    return guarded_app


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the signature of the base class
        """A scrape every few seconds is not worth a log line."""


def serve(port: int, addr: str, token: str | None, registry: Any) -> WSGIServer:
    """Serve `registry` on addr:port from a daemon thread; returns the server (shutdown() stops it)."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    # A class of its own for the family: IPv6 addresses need AF_INET6 (as prometheus-client's own server does).
    server_class: type[ThreadingWSGIServer] = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    app = guarded(make_wsgi_app(registry), token, addr)
    server: WSGIServer = make_server(addr, port, app, server_class, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, name="eipdash-metrics", daemon=True).start()
    return server


def start_from_env() -> Any:
    """Start the server when EIPDASH_METRICS_PORT is set (once per process); returns the server or None."""
    global _started
    port = os.environ.get("EIPDASH_METRICS_PORT")
    if not port or _started:
        return None
    addr = os.environ.get("EIPDASH_METRICS_ADDR", "127.0.0.1")
    token = settings.EIPDASH_METRICS_TOKEN or None
    path = multiproc_dir()
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    server = serve(int(port), addr, token, registry)
    _started = True
    if token is None and not is_loopback(addr):
        log.warning("metrics port %s:%s answers 401 to every request: set EIPDASH_METRICS_TOKEN (a bearer token "
                    "Prometheus sends) to serve metrics on an address other than loopback", addr, port)
    else:
        log.info("metrics of this worker on http://%s:%s/metrics%s", addr, port,
                 " (bearer EIPDASH_METRICS_TOKEN)" if token else "")
    return server


def on_worker_ready(**_kwargs: Any) -> None:
    start_from_env()
