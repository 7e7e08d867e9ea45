"""The audit export through the real web server, started as the Procfile starts it (gunicorn.conf.py), with a
2 s worker timeout and a download that lasts several times longer: every row arrives, the trailer matches
the database, and the file is byte for byte what `manage.py export_history` writes. A database failure
midway ends the download with an error and no trailer, never a clean end.

The client reads slowly on purpose (a paced reader with a small receive buffer), so that the response
outlasts the timeout without seeding millions of rows. gunicorn's sync worker fails this test: it is
killed at the timeout and the client gets a short file (GUNICORN_CMD_ARGS="--worker-class sync --threads 1";
with more than one thread gunicorn quietly runs gthread instead).
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings

from bench.export import seed_events
from pools import exports
from sandbox.ports import free_port, wait_for_port
from tests.e2e.stack import database_url

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER_TIMEOUT = 2
# About 6.6 MB of CSV: more than the loopback socket buffers can hold (the sender's at most 4 MB here,
# net.ipv4.tcp_wmem, and the reader's 64 KB), so the server is still writing when the client has read only
# part of it. (60,000 rows proved the same at twice the CPU: rendering and comparing them was most of it.)
ROWS = 36_000
# The reader's pace: the download takes about 9 s, several times the worker timeout, however fast the
# server is (a loaded machine only makes it slower).
READ_BYTES_PER_S = 720_000
# Production settings (DEBUG off) need a real-looking key; the test signs its session with the same one.
SECRET_KEY = "export-e2e-" + "0123456789abcdef" * 4
CSV_TRAILER = re.compile(rb"# eipdash export complete: (\d+) rows\r\n\Z")


@dataclass
class Web:
    port: int
    cookie: str
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def web(viewer: User, transactional_db: None, redis_url: str, tmp_path: Path,
        request: pytest.FixtureRequest) -> Iterator[Web]:  # fmt: skip
    """gunicorn as the Procfile runs it, bound to loopback, one process, a 2 s worker timeout (and the
    conf file's threads, unless a test asks for a number with indirect parametrisation)."""
    threads = ["--threads", str(request.param)] if hasattr(request, "param") else []
    with override_settings(SECRET_KEY=SECRET_KEY):
        client = Client()
        client.force_login(viewer)
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "eipdash.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_COOKIES": "false",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
    }
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "eipdash.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", str(WORKER_TIMEOUT), *threads],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_port(port, 60)
        yield Web(port, cookie, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Download:
    status: int
    body: bytes
    complete: bool  # the chunked body ended with its terminating chunk
    seconds: float


def download(web: Web, path: str, *, pace: float | None,
             on_first_bytes: Callable[[], None] | None = None) -> Download:  # fmt: skip
    """GET with a small receive buffer, reading at `pace` bytes/s (None: as fast as it comes)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: sets the TCP window
    sock.settimeout(60)
    sock.connect(("127.0.0.1", web.port))
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)
    conn.sock = sock
    start = time.monotonic()
    conn.request("GET", path, headers={"Cookie": web.cookie})
    response = conn.getresponse()
    parts: list[bytes] = []
    received = 0
    complete = True
    try:
        while True:
            part = response.read(64 * 1024)
            if not part:
                break
            if not parts and on_first_bytes is not None:
                on_first_bytes()
            parts.append(part)
            received += len(part)
            if pace is not None:
                # Pace the reader: the server's writes block once the socket buffers are full.
                ahead = received / pace - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    except (http.client.IncompleteRead, ConnectionError, TimeoutError):
        complete = False
    finally:
        conn.close()
    return Download(response.status, b"".join(parts), complete, time.monotonic() - start)


def test_a_long_csv_export_outlasts_the_worker_timeout_and_arrives_whole(web: Web, tmp_path: Path) -> None:
    assert seed_events(ROWS) == ROWS
    got = download(web, "/history/export.csv", pace=READ_BYTES_PER_S)
    assert got.status == 200, web.logs()
    assert got.complete, f"the response was cut after {len(got.body)} bytes, {got.seconds:.1f} s\n{web.logs()}"
    trailer = CSV_TRAILER.search(got.body)
    assert trailer, f"no trailer: {got.body[-300:]!r}\n{web.logs()}"
    rows = list(csv.reader(io.StringIO(got.body[: trailer.start()].decode(), newline="")))
    assert rows[0] == list(exports.CSV_COLUMNS)
    assert len(rows) - 1 == int(trailer.group(1)) == ROWS
    assert "WORKER TIMEOUT" not in web.logs()
    # The setup's own check: the download really lasted several worker timeouts.
    assert got.seconds > 3 * WORKER_TIMEOUT, got.seconds
    # The command writes the same bytes (the same code; its own process, stdout to a file).
    target = tmp_path / "export.csv"
    with open(target, "wb") as out:
        subprocess.run([sys.executable, "manage.py", "export_history"], cwd=ROOT, stdout=out, check=True, timeout=300,
                       env={**os.environ, "DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true",
                            "DATABASE_URL": database_url()})  # fmt: skip
    assert target.read_bytes() == got.body


def test_a_long_jsonl_export_arrives_whole(web: Web) -> None:
    seed_events(ROWS)
    got = download(web, "/history/export.jsonl", pace=None)
    assert got.status == 200 and got.complete, web.logs()
    *lines, last = got.body.split(b"\n")[:-1]
    assert last == b'{"_export": {"rows": %d, "complete": true}}' % ROWS and len(lines) == ROWS


def _break_midway() -> Callable[[], None] | None:
    """A database failure after the 200 went out. SQLite: the oldest row holds bytes that are not UTF-8,
    so the fetch that reaches it fails. PostgreSQL: the export's backend is terminated once bytes arrive."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("UPDATE pools_event SET reason = CAST(X'ff' AS TEXT) WHERE id = "
                           "(SELECT id FROM pools_event ORDER BY timestamp, id LIMIT 1)")  # fmt: skip
        return None

    # Rows of 2 KB: 120 MB in all, more than the socket buffers between PostgreSQL, gunicorn and the
    # client can hold, so the server is still sending when its backend goes.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pools_event SET reason = repeat('x', 2000)")

    def terminate() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database() AND state = 'active'"
                " AND query LIKE %s",
                ["%_export_stamp%"],  # the streamed export statement, and nothing else
            )
            assert cursor.fetchall(), "no export query to terminate"

    return terminate


def test_a_failure_midway_ends_the_download_with_an_error_and_no_trailer(web: Web) -> None:
    seed_events(ROWS)
    on_first_bytes = _break_midway()
    got = download(web, "/history/export.csv", pace=None, on_first_bytes=on_first_bytes)
    assert got.status == 200
    assert not got.complete, "the response ended cleanly after a database failure"
    assert got.body.count(b"\r\n") > exports.CHUNK_ROWS  # rows arrived before the failure
    assert b"eipdash export complete" not in got.body


@pytest.mark.parametrize("web", [1], indirect=True)  # one thread: the second download reuses its connection
def test_a_client_that_leaves_midway_leaves_the_server_ready_for_the_next_export(web: Web) -> None:
    seed_events(ROWS)
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=60)
    sock.sendall(f"GET /history/export.csv HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {web.cookie}\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()  # gone in the middle of the stream: the server stops, PostgreSQL cancels the statement
    got = download(web, "/history/export.csv", pace=None)
    assert got.status == 200 and got.complete, web.logs()
    trailer = CSV_TRAILER.search(got.body)
    assert trailer and int(trailer.group(1)) == ROWS, web.logs()
