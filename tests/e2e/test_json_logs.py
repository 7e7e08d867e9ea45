"""EIPDASH_LOG_FORMAT=json: one JSON object per log line, from a real Celery worker and from Django's own
logging setup (what web and the watch use), with spec / node / ip / allocation_id as fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import ROOT, Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World

pytestmark = pytest.mark.e2e


def json_lines(text: str) -> list[dict[str, object]]:
    """Every log line; Celery's startup banner and shutdown notice go to stdout as plain text, not as log
    records (``celery -q`` leaves the banner out), so only lines that start an object are records."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_worker_logs_are_json_with_fields(stack: Stack, world_tx: World, tmp_path: Path) -> None:
    world = world_tx
    stack.env["EIPDASH_LOG_FORMAT"] = "json"
    spec = world.spec()
    world.eips(1)
    world.node("n1")
    stack.worker()
    stack.enqueue_reconcile(spec.pk)
    eventually(lambda: world.eip_on("n1") and TAINT not in world.taints("n1"), timeout=60, stack=stack,
               what="n1 assigned")
    log_path = tmp_path / "worker.log"

    def assigned_record() -> dict[str, object] | None:
        records = json_lines(log_path.read_text(errors="replace"))
        return next((r for r in records if str(r.get("message", "")).startswith("assigned:")), None)

    record = eventually(assigned_record, timeout=20, stack=stack, what="the assigned event's log record")
    ip = world.address(world.eip_on("n1") or "")["PublicIp"]
    assert record["spec"] == spec.name and record["node"] == "n1" and record["ip"] == ip
    assert record["allocation_id"] == world.eip_on("n1")
    assert record["level"] == "INFO" and record["logger"] == "pools.services"
    assert str(record["timestamp"]).endswith("Z")
    for line in json_lines(log_path.read_text(errors="replace")):
        assert {"timestamp", "level", "logger", "message"} <= line.keys()


def test_django_processes_log_json(tmp_path: Path) -> None:
    """web (gunicorn's Django app), the watch and every manage.py command share settings.LOGGING."""
    code = (
        "import django, logging; django.setup(); from pools.logs import log_fields; "
        "logging.getLogger('workers.watch').warning('node changed', extra=log_fields(spec='s', node='n'))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true", "EIPDASH_LOG_FORMAT": "json",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    (line,) = [json.loads(text) for text in result.stderr.splitlines() if text.strip()]
    assert line["message"] == "node changed" and line["level"] == "WARNING" and line["logger"] == "workers.watch"
    assert line["spec"] == "s" and line["node"] == "n" and "ip" not in line
