"""Real processes for end-to-end tests: Celery workers, beat and the node watch, on the test database,
Redis and the emulators. Every process is stopped, whatever the test's outcome."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def database_url() -> str:
    """The URL of the test database this pytest process uses, for child processes."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Stack:
    def __init__(self, redis_url: str, tmp_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.processes: list[tuple[str, subprocess.Popen[bytes], Any]] = []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "eipdash.settings",
            "DJANGO_DEBUG": "true",
            "DJANGO_SECRET_KEY": "e2e-only",
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "EIPDASH_RECONCILE_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }

    def enqueue_reconcile(self, spec_id: int, times: int = 1) -> None:
        """Send reconcile_spec to this stack's broker (this pytest process may have another default)."""
        from eipdash.celery import app
        from workers.tasks import reconcile_spec

        with app.connection_for_write(self.env["REDIS_URL"]) as conn:
            for _ in range(times):
                reconcile_spec.apply_async((spec_id,), connection=conn)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "wb")  # closed in stop()
        process = subprocess.Popen(list(args), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append((name, process, log))
        return process

    def worker(self, name: str = "worker", concurrency: int = 1) -> None:
        self.start(name, str(BIN / "celery"), "-A", "eipdash", "worker", "--loglevel=INFO",
                   f"--concurrency={concurrency}", f"--hostname={name}@%h", "--without-gossip", "--without-mingle")

    def beat(self) -> None:
        self.start("beat", str(BIN / "celery"), "-A", "eipdash", "beat", "--loglevel=INFO",
                   f"--schedule={self.tmp_path / 'beat-schedule'}")

    def watch(self) -> None:
        self.start("watch", sys.executable, "manage.py", "watch_nodes", "--stop-after", "120")

    def logs(self) -> str:
        out = []
        for name, _, _ in self.processes:
            path = self.tmp_path / f"{name}.log"
            out.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def assert_alive(self) -> None:
        for name, process, _ in self.processes:
            assert process.poll() is None, f"{name} exited with {process.returncode}\n{self.logs()}"

    def stop(self) -> None:
        for _, process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process, log in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()

