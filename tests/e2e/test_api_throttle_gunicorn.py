"""The API's rate limits (pools/api/throttle.py) through the real web server, as deployments start it
(gunicorn.conf.py: two processes of four threads here), with 16 parallel clients.

A counter that is read, then written (DRF's SimpleRateThrottle on a cache) lets parallel requests all read the
same count and all pass: 16 clients got 1,307 answers of 200 in 9.8 s against 600 a minute. The limits here
are small (60 a minute per user, 20 per address without a valid credential) so that few requests prove them;
every burst ends well within the one-minute window, which is the only timing the assertions rely on.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from pools.api.tokens import token_create
from sandbox.ports import free_port, wait_for_port
from tests.e2e.stack import database_url

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET_KEY = "throttle-e2e-" + "0123456789abcdef" * 4
USER_LIMIT = 60  # EIPDASH_API_RATE, a minute
ADDRESS_LIMIT = 20  # EIPDASH_API_ANON_RATE, a minute
WINDOW = 60.0
CLIENTS = 16
MARGIN = 0.05
SPECS = "/api/v1/launch-specs/"
BAD_TOKEN = "eipd_" + "x" * 43


@dataclass
class Web:
    port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Answer:
    status: int
    retry_after: str | None
    body: bytes


@pytest.fixture
def web(transactional_db: None, redis_url: str, tmp_path: Path) -> Iterator[Web]:
    """gunicorn on loopback with production settings, two processes sharing the limits through Redis."""
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
        "EIPDASH_API_RATE": f"{USER_LIMIT}/min",
        "EIPDASH_API_ANON_RATE": f"{ADDRESS_LIMIT}/min",
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --workers 2 --threads 4",
    }
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "eipdash.wsgi:application"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, 60)
        yield Web(port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request(web: Web, connection: http.client.HTTPConnection, headers: dict[str, str]) -> Answer:
    connection.request("GET", SPECS, headers={"Host": "127.0.0.1", **headers})
    response = connection.getresponse()
    return Answer(response.status, response.getheader("Retry-After"), response.read())


def burst(web: Web, clients: list[tuple[str, dict[str, str]]], each: int) -> tuple[list[Answer], float]:
    """Every client (source address, headers) on its own thread and keep-alive connection, all released at
    once, sends `each` requests back to back. Returns every answer and how long the burst took."""
    answers: list[Answer] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(clients))

    def run(source: str, headers: dict[str, str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60, source_address=(source, 0))
        try:
            start.wait(timeout=60)
            got = [request(web, connection, headers) for _ in range(each)]
            with lock:
                answers.extend(got)
        except BaseException as exc:  # noqa: BLE001 - reported by the test, with the server's log
            with lock:
                failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=client) for client in clients]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    took = time.monotonic() - began
    assert not failures, f"{failures!r}\n{web.logs()}"
    assert len(answers) == len(clients) * each, web.logs()
    return answers, took


def one(web: Web, source: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60, source_address=(source, 0))
    try:
        return request(web, connection, headers).status
    finally:
        connection.close()


def assert_refusals_say_when_to_retry(answers: list[Answer]) -> None:
    for answer in answers:
        if answer.status == 429:
            assert answer.retry_after is not None and 0 < int(answer.retry_after) <= WINDOW, answer
            assert "throttled" in json.loads(answer.body)["detail"].lower(), answer


def test_parallel_clients_of_one_user_get_no_more_200s_than_the_limit(web: Web, viewer: User) -> None:
    secret = token_create(user=viewer).secret
    # The user's budget, one minute: 16 clients, 8 requests each (twice the limit), from tokens of one user.
    clients = [("127.0.0.1", {"Authorization": f"Bearer {secret}"}) for _ in range(CLIENTS)]
    answers, took = burst(web, clients, each=2 * USER_LIMIT // CLIENTS)
    assert took < WINDOW, f"the burst took {took:.1f}s, longer than the window: the count proves nothing"
    counts = Counter(answer.status for answer in answers)
    assert set(counts) <= {200, 429}, (counts, web.logs())
    assert USER_LIMIT * (1 - MARGIN) <= counts[200] <= USER_LIMIT * (1 + MARGIN), counts
    assert_refusals_say_when_to_retry(answers)


def test_parallel_failed_authentication_gets_429_per_address(web: Web, viewer: User) -> None:
    # One address sends wrong tokens and no credential at all, in parallel, twice its budget.
    attacker = "127.0.0.2"
    clients = [(attacker, {"Authorization": f"Bearer {BAD_TOKEN}"} if n % 2 else {}) for n in range(CLIENTS)]
    answers, took = burst(web, clients, each=-(-2 * ADDRESS_LIMIT // CLIENTS))
    assert took < WINDOW, f"the burst took {took:.1f}s, longer than the window: the count proves nothing"
    counts = Counter(answer.status for answer in answers)
    assert set(counts) <= {401, 429}, (counts, web.logs())
    assert ADDRESS_LIMIT * (1 - MARGIN) <= counts[401] <= ADDRESS_LIMIT * (1 + MARGIN), counts
    assert_refusals_say_when_to_retry(answers)
    # Hammered, it stays refused.
    assert one(web, attacker, {"Authorization": f"Bearer {BAD_TOKEN}"}) == 429
    # Another address has its own budget; a valid token is served from anywhere, the attacker's address too.
    secret = token_create(user=viewer).secret
    assert one(web, "127.0.0.3", {"Authorization": f"Bearer {BAD_TOKEN}"}) == 401
    assert one(web, "127.0.0.3", {"Authorization": f"Bearer {secret}"}) == 200
    assert one(web, attacker, {"Authorization": f"Bearer {secret}"}) == 200
