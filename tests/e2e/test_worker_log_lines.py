"""A real Celery worker's console tells each thing a pass did once, in the plain and the JSON format.

A pass logs its report line by line ("egress-web: assigned 1.2.3.4 → node") and returns the same lines;
Celery's success line ("Task … succeeded in 0.05s: […]") printed that return value again, so every line of the
report showed twice in the worker's console (and again in the JSON record's ``data``).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World

pytestmark = pytest.mark.e2e

SUCCEEDED = re.compile(r"Task workers\.tasks\.reconcile_spec\[[^\]]+\] succeeded in [\d.]+s")


def _lines(text: str, log_format: str) -> list[str]:
    """The console's lines as text: JSON records decoded (the arrow is escaped in them), plain lines as they are."""
    if log_format == "plain":
        return text.splitlines()
    return [json.dumps(json.loads(line), ensure_ascii=False) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_worker_console_logs_each_report_line_and_event_once(stack: Stack, world_tx: World, log_format: str,
                                                              ) -> None:
    world = world_tx
    stack.env["EIPDASH_LOG_FORMAT"] = log_format
    spec = world.spec()
    world.eips(1)
    world.node("n1")
    stack.worker()
    stack.enqueue_reconcile(spec.pk)
    eventually(lambda: world.eip_on("n1") and TAINT not in world.taints("n1"), timeout=60, stack=stack,
               what="n1 assigned")
    ip = world.address(world.eip_on("n1") or "")["PublicIp"]
    report_line = f"{spec.name}: assigned {ip} → n1"
    log = stack.tmp_path / "worker.log"

    def pass_ended() -> list[str] | None:
        # Celery's success line of the pass comes after the pass's own lines: then all are written.
        lines = _lines(log.read_text(errors="replace"), log_format)
        told = [i for i, line in enumerate(lines) if report_line in line]
        ended = [i for i, line in enumerate(lines) if SUCCEEDED.search(line)]
        return lines if told and ended and ended[-1] > told[0] else None

    # ValueError: a JSON line read while it was still being written.
    lines = eventually(pass_ended, timeout=30, stack=stack, what="the pass's success line",
                       ignoring=(AssertionError, ValueError))
    assert sum(report_line in line for line in lines) == 1, "\n".join(lines)
    # The history event of the assignment is one line of its own too.
    events = [line for line in lines if re.search(r"\bassigned: associated with ", line)]
    assert len(events) == 1, "\n".join(lines)
    # Celery still says the task succeeded, and how long it took.
    assert any(SUCCEEDED.search(line) for line in lines)
