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
