"""The short fault campaign (`python -m sandbox.chaos --short`): real worker, beat and watch processes (one
worker with its clock 30 s ahead), EC2 behind the fault proxy, Kubernetes with faults, worker SIGKILLs, a
worker frozen past its lease, a spot interruption whose Node stays listed NotReady, and a Redis restart; the
invariant checker samples all along. The promise is kept when it finds no violation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.campaign]

CAMPAIGN_TIMEOUT = 420  # about 40 s of faults (120 s at most), 20 s quiet, start-up and shutdown, on a loaded machine


def test_short_chaos_campaign_keeps_every_invariant(tmp_path: Path) -> None:
    # The campaign makes its own database (a SQLite file, or a fresh one on the DATABASE_URL server) and
    # its own Redis, which it restarts: it never shares them with the test session.
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KUBECONFIG", "DJANGO_SETTINGS_MODULE")}
    completed = subprocess.run(
        [sys.executable, "-m", "sandbox.chaos", "--short", "--seed", "1", "--state-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=CAMPAIGN_TIMEOUT,
    )
    output = completed.stdout + completed.stderr
    logs = (tmp_path / "processes.log").read_text(errors="replace")[-6000:] if (
        tmp_path / "processes.log").exists() else ""
    assert "faults injected: " in output, output + logs
    lines = {line.split(":", 1)[0]: line for line in output.splitlines() if ": " in line}
    assert int(lines["worker kills"].split(": ")[1]) >= 3, output
    assert int(lines["freezes"].split(": ")[1]) >= 1, output
    assert int(lines["spot interruptions"].split(": ")[1]) >= 1, output
    assert lines["skewed workers"] == "skewed workers: 1", output
    assert lines["redis restarts"] == "redis restarts: 1", output
    assert int(lines["faults injected"].split(": ")[1].split()[0]) > 0, output
    assert "violations: 0" in output.splitlines(), output
    assert completed.returncode == 0, output + logs
