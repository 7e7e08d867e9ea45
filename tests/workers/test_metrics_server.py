"""The worker's own /metrics port (workers/metrics_server.py), served for real on a free port and asked over HTTP:
the bearer token EIPDASH_METRICS_TOKEN is required as on the web's /metrics; without a token only a port bound
to loopback answers (nothing off the host can reach it), never one bound to every address."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_django.fixtures import Settings

from sandbox.ports import free_port
from workers import metrics_server


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """start_from_env() as the worker calls it, with EIPDASH_METRICS_PORT and _ADDR set; every server it started
    is shut down after the test."""
    servers: list[Any] = []

    def start(addr: str) -> int:
        port = free_port()
        monkeypatch.setenv("EIPDASH_METRICS_PORT", str(port))
        monkeypatch.setenv("EIPDASH_METRICS_ADDR", addr)
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        monkeypatch.setattr(metrics_server, "_started", False)  # once per process: each test is a new worker
        server = metrics_server.start_from_env()
        assert server is not None
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(port: int, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize("addr", ["0.0.0.0", "127.0.0.1"])
def test_the_port_needs_the_metrics_token(addr: str, serve: Any, settings: Settings) -> None:
    settings.EIPDASH_METRICS_TOKEN = "s3cret-token"
    port = serve(addr)
    for refused in (None, "Bearer wrong", "Bearer s3cret-tokeN", "s3cret-token", "Basic s3cret-token", "Bearer "):
        status, headers, body = get(port, refused)
        assert status == 401, refused
        assert headers["WWW-Authenticate"] == 'Bearer realm="eipdash metrics"'
        assert b"eipdash_" not in body
    status, _, body = get(port, "Bearer s3cret-token")
    assert status == 200 and b"# TYPE eipdash_aws_calls_total counter" in body
    assert get(port, "bearer s3cret-token")[0] == 200  # the scheme is case-insensitive (RFC 7235)


def test_without_a_token_only_a_loopback_port_answers(serve: Any, settings: Settings,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    settings.EIPDASH_METRICS_TOKEN = None
    # Bound to loopback (the default address): only this host (or pod) can connect, as before.
    status, _, body = get(serve("127.0.0.1"))
    assert status == 200 and b"eipdash_aws_calls_total" in body
    # Bound to every address without a token: refused to everyone, even over loopback, and said so in the log.
    with caplog.at_level("WARNING", logger="workers.metrics_server"):
        port = serve("0.0.0.0")
    status, _, body = get(port)
    assert status == 401 and b"EIPDASH_METRICS_TOKEN" in body and b"eipdash_aws" not in body
    assert "EIPDASH_METRICS_TOKEN" in caplog.text
