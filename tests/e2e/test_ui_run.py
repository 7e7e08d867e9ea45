"""`make run` as an on-call person meets it: the CLI works against the running stack from the env file, the
console shows what changes (not every no-op pass and poll), and Ctrl-C stops the worker with Celery's warm
shutdown, without WorkerLostError tracebacks.

Real processes, as tests/e2e/test_run_stack.py starts them (its make_run fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.e2e.test_run_stack import PYTHON, ROOT, RunProcess, _alive, _killpg, make_run  # noqa: F401

pytestmark = pytest.mark.e2e


def _env_from_file(path: Path) -> dict[str, str]:
    """What `set -a; . var/sandbox/env` gives a shell that has none of eipdash's variables of its own."""
    script = f"set -a; . {path}; env -0"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AWS_", "KUBECONFIG", "PYTEST_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    raw = subprocess.run(["bash", "-c", script], env=clean, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_cli_console_and_ctrl_c_against_the_running_stack(
        make_run: tuple[RunProcess, int], tmp_path: Path) -> None:  # noqa: F811 (the fixture imported above)
    run, port = make_run
    run.wait_for("eipdash is live", timeout=90)
    env_file = tmp_path / "state" / "env"
    env = _env_from_file(env_file)
    assert {"DATABASE_URL", "REDIS_URL", "DJANGO_DEBUG", "AWS_ENDPOINT_URL_EC2", "KUBECONFIG"} <= set(env)

    # The README's command works from the env file alone, on the run's own database.
    listed = subprocess.run([PYTHON, "manage.py", "launchspec", "list"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "NAME\tCLUSTER\tREGION\tLABELS\tSELECTOR\tSTATE"
    assert {line.split("\t")[0] for line in lines[1:]} == {"egress-web", "egress-batch", "egress-private"}
    assert "Traceback" not in listed.stderr
    # The run's database, not a fresh empty var/eipdash.sqlite3.
    assert env["DATABASE_URL"] == f"sqlite:///{tmp_path / 'state' / 'eipdash.sqlite3'}"

    # Work happens (an assignment shows up) while the routine lines stay off the console.
    run.wait_for(": assigned ", timeout=60)
    for _ in range(3):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code in (200, 503)
    run.wait_for("taint_lifted", timeout=60)
    output = run.output()
    assert ": nothing to do" not in output
    # A routine probe stays off the console; a 503 (a pass late on a loaded machine) is logged, as it should be.
    assert "] received" not in output and '"GET /healthz HTTP/1.1" 200' not in output

    # Ctrl-C: a warm shutdown of the worker, and no WorkerLostError.
    pids = run.child_pids()
    _killpg(run.process, signal.SIGINT)
    assert run.process.wait(timeout=60) == 0, run.output()[-3000:]
    output = run.output()
    assert "worker: warm shutdown" in output and "Warm shutdown" in output
    assert "WorkerLostError" not in output and "Traceback" not in output, output[-3000:]
    assert [name for name, pid in pids.items() if _alive(pid)] == []
