"""The liveness probes of the manifests and compose file, run for real: `manage.py worker_alive` against a
real Celery worker on real Redis, and the heartbeat checks of watch and beat on real files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sandbox.ports import free_port
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually

ROOT = Path(__file__).resolve().parent.parent
KUBE_DIR = ROOT / "deploy" / "kubernetes"


def probe_command(deployment: str) -> list[str]:
    for document in yaml.safe_load_all((KUBE_DIR / f"{deployment}.yaml").read_text()):
        if document and document["kind"] == "Deployment":
            command: list[str] = document["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"][
                "command"]
            return command
    raise AssertionError(f"no Deployment in {deployment}.yaml")


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_worker_alive_answers_for_a_live_worker_and_fails_for_a_silent_one(
    redis_url: str, tmp_path: Path, transactional_db: None,
) -> None:
    stack = Stack(redis_url, tmp_path)
    node = f"probe@{socket.gethostname()}"
    alive = [sys.executable, "manage.py", "worker_alive", "--timeout", "3"]
    try:
        # A queue of its own: the probe only needs the worker's control channel, and this worker must not
        # take the tasks of other tests sharing the Redis.
        stack.start("probe", str(Path(sys.executable).parent / "celery"), "-A", "eipdash", "worker",
                    "--loglevel=INFO", "--concurrency=1", f"--hostname={node}", "-Q", f"probe-{os.getpid()}",
                    "--without-gossip", "--without-mingle")
        # The manifests' probe runs with no --node: the worker's default name is celery@<pod name>. Here the
        # worker is named probe@<host>, so the probe is given that name.
        result = eventually(lambda: (r := run([*alive, "--node", node], stack.env)).returncode == 0 and r,
                            timeout=60, stack=stack, what="the worker answered the probe")
        assert f"{node} is alive" in result.stdout
        # A node that does not answer (the worker stuck, or gone) fails the probe: exit 1.
        silent = run([*alive, "--node", f"nobody@{socket.gethostname()}"], stack.env)
        assert silent.returncode == 1, silent
        assert "did not answer" in silent.stderr
    finally:
        stack.stop()


def test_worker_alive_passes_while_the_broker_is_down(tmp_path: Path, transactional_db: None) -> None:
    """Restarting workers does not bring Redis back: a broker outage must not fail the probe."""
    env = Stack(f"redis://127.0.0.1:{free_port()}/0", tmp_path).env  # nothing listens there
    result = run([sys.executable, "manage.py", "worker_alive", "--timeout", "2"], env)
    assert result.returncode == 0, result
    assert "broker unreachable" in result.stdout


def heartbeat_probe(deployment: str, tmp_path: Path) -> list[str]:
    """The manifest's probe, with its /tmp/ paths moved into this test's directory."""
    return [part.replace("/tmp/", f"{tmp_path}/") for part in probe_command(deployment)]


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize(("deployment", "files", "stale_after"), [
    ("watch", ["eipdash-watch-heartbeat"], 120),
    # dbm.gnu writes one file, dbm.dumb three: the newest counts.
    ("beat", ["celerybeat-schedule.dat", "celerybeat-schedule.dir", "celerybeat-schedule.bak"], 600),
    ("beat", ["celerybeat-schedule"], 600),
])
def test_heartbeat_probes_pass_on_a_fresh_file_and_fail_on_a_stale_or_missing_one(
    deployment: str, files: list[str], stale_after: int, tmp_path: Path,
) -> None:
    probe = heartbeat_probe(deployment, tmp_path)
    assert probe[0] == "python"
    probe[0] = sys.executable
    assert run(probe).returncode != 0, "no heartbeat yet: the probe must fail"
    for name in files:
        (tmp_path / name).touch()
    assert run(probe).returncode == 0
    for name in files:
        age(tmp_path / name, stale_after + 30)
    assert run(probe).returncode != 0, "a stale heartbeat must fail the probe"
    age(tmp_path / files[0], 5)
    assert run(probe).returncode == 0, "the newest file counts"


def test_the_watch_touches_its_heartbeat_file(kube_env: Path, transactional_db: None, tmp_path: Path,
                                              redis_url: str) -> None:
    heartbeat = tmp_path / "eipdash-watch-heartbeat"
    stack = Stack(redis_url, tmp_path)
    try:
        stack.start("watch", sys.executable, "manage.py", "watch_nodes", "--stop-after", "60",
                    "--heartbeat-file", str(heartbeat))
        eventually(heartbeat.exists, timeout=30, stack=stack, what="the watch wrote its heartbeat")
        probe = heartbeat_probe("watch", tmp_path)
        probe[0] = sys.executable
        assert run(probe).returncode == 0
    finally:
        stack.stop()
