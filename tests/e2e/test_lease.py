"""A pass SIGKILLed mid-flight frees its spec within the lease time: the next pass starts within 15 s.

The killed pass is a real `manage.py reconcile` process. It takes the spec's lease, then blocks in its
first AWS call against an endpoint that accepts connections and never answers (as a stalled EC2 API would),
renewing its lease all the while. The test kills it with SIGKILL, as an OOM kill or a node loss would.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from pools.locks import lease_key
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World
from workers import executor

pytestmark = pytest.mark.e2e

NEXT_PASS_WITHIN_SECONDS = 15.0


@pytest.fixture
def silent_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """http://127.0.0.1:<port>: accepts every connection, reads nothing, answers nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
        for conn in accepted:
            conn.close()


def test_the_next_pass_starts_within_15s_of_a_sigkill(stack: Stack, world_tx: World, redis_url: str,
                                                      silent_endpoint: tuple[str, list[socket.socket]]) -> None:
    spec = world_tx.spec()
    (allocation_id,) = world_tx.eips(1)
    world_tx.node("new")
    endpoint, accepted = silent_endpoint
    stack.env["AWS_ENDPOINT_URL_EC2"] = endpoint
    stuck = stack.start("stuck-pass", sys.executable, "manage.py", "reconcile", "--spec", spec.name)
    client = redis.Redis.from_url(redis_url)
    # The stuck pass holds the lease and sits in its first EC2 call.
    eventually(lambda: client.get(lease_key(spec.pk)) is not None and accepted, timeout=30, stack=stack,
               what="the pass took the lease and called EC2")
    assert executor.reconcile_spec(spec.pk).skipped  # single flight: the spec is taken

    os.killpg(stuck.pid, signal.SIGKILL)
    stuck.wait(timeout=10)
    killed_at = time.monotonic()
    reports = []

    def next_pass_ran() -> bool:
        report = executor.reconcile_spec(spec.pk)
        reports.append(report)
        return not report.skipped

    eventually(next_pass_ran, timeout=killed_at + NEXT_PASS_WITHIN_SECONDS - time.monotonic(), interval=0.2,
               what=f"a pass within {NEXT_PASS_WITHIN_SECONDS}s of the SIGKILL")
    print(f"the next pass ran {time.monotonic() - killed_at:.1f}s after the SIGKILL")  # for the record (-s)
    assert world_tx.eip_on("new") == allocation_id and TAINT not in world_tx.taints("new")
