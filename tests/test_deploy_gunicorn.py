"""The web server as every deployment starts it: `gunicorn -c gunicorn.conf.py eipdash.wsgi:application`.

The point of the shared gunicorn.conf.py is its gthread worker: a response that streams for longer than
gunicorn's worker `timeout` (a big audit export) must arrive whole, never be cut when the arbiter kills a
sync worker that did not check in. The test runs the real gunicorn with the real config file on a WSGI app
that streams for several times a 2 s timeout.
"""

from __future__ import annotations

import http.client
import os
import runpy
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "gunicorn.conf.py"
GUNICORN = Path(sys.executable).parent / "gunicorn"
CHUNKS = 12
CHUNK_PAUSE = 0.5  # 12 x 0.5 s = 6 s of streaming against a 2 s worker timeout


def slow_stream(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A WSGI app whose one response takes three times the test's worker timeout, like a long export."""

    def body() -> Iterator[bytes]:
        for number in range(1, CHUNKS + 1):
            yield f"row {number}\n".encode()
            time.sleep(CHUNK_PAUSE)
        yield f"end {CHUNKS}\n".encode()

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


def test_the_config_file_selects_gthread_and_reads_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    conf = runpy.run_path(str(CONF))
    assert conf["worker_class"] == "gthread"
    assert conf["bind"] == ["0.0.0.0:8123"]
    assert conf["workers"] == 5 and conf["threads"] >= 2
    assert conf["timeout"] >= 30 and conf["graceful_timeout"] >= 30
    # No control socket in $HOME: read-only in the containers, and shared by every server on one machine.
    assert conf["control_socket_disable"] is True


@pytest.mark.e2e
def test_a_response_longer_than_the_worker_timeout_arrives_whole(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        # GUNICORN_CMD_ARGS overrides the config file: loopback only, one process, a 2 s worker timeout.
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --workers 1 --timeout 2",
    }
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(GUNICORN), "-c", str(CONF), "tests.test_deploy_gunicorn:slow_stream"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, timeout=30)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/export")
            response = connection.getresponse()
            assert response.status == 200
            try:
                body = response.read().decode()
            except http.client.IncompleteRead as exc:
                body = exc.partial.decode()
            connection.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    lines = body.splitlines()
    logs = log_path.read_text(errors="replace")
    assert lines == [f"row {n}" for n in range(1, CHUNKS + 1)] + [f"end {CHUNKS}"], (lines[-3:], logs[-2000:])
    assert "WORKER TIMEOUT" not in logs
    assert "gthread" in logs  # "Using worker: gthread"


def run_compose_web_healthcheck(port: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The web service's healthcheck from docker-compose.yml, run as compose runs it: once more after a
    failure, up to its ``retries``. Its request gives up after 3 s, and the first one waits for gunicorn's
    worker to load the app, which a loaded machine can make longer than that; compose counts such a miss only
    once the retries are spent, and so does this."""
    import yaml

    healthcheck = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["healthcheck"]
    test: list[str] = healthcheck["test"]
    assert test[0] == "CMD"
    command = [sys.executable if part == "python" else part.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
               for part in test[1:]]
    for _ in range(healthcheck["retries"]):
        check = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        if check.returncode == 0:
            break
    return check


@pytest.mark.e2e
def test_the_web_healthcheck_answers_through_gunicorn_behind_tls_settings(tmp_path: Path, redis_url: str) -> None:
    """The real app under the real config, with the README's production TLS switches on: the compose
    healthcheck (and the Kubernetes probes, which send the same headers) get their 200, not a redirect."""
    port = free_port()
    env = {
        **os.environ,
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --workers 1",
        "DJANGO_SETTINGS_MODULE": "eipdash.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_hex(32),
        "DJANGO_ALLOWED_HOSTS": "eipdash.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
        "REDIS_URL": redis_url,
        "DJANGO_SECURE_SSL_REDIRECT": "true",
        "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
    }
    with open(tmp_path / "gunicorn.log", "wb") as log:
        server = subprocess.Popen([str(GUNICORN), "-c", str(CONF), "eipdash.wsgi:application"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=60)
            check = run_compose_web_healthcheck(port, env)
            # Without the proxy's header the same request is redirected to https: the header is what counts.
            plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            plain.request("GET", "/healthz", headers={"Host": "eipdash.example.com"})
            redirected = plain.getresponse().status
            plain.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert check.returncode == 0, (check.stderr[-2000:], (tmp_path / "gunicorn.log").read_text()[-2000:])
    assert redirected == 301
