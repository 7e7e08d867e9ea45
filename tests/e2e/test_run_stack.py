"""The whole stack as `make run` starts it, as real processes: sandbox --simulate, Celery worker and beat, and
the web server, on free loopback ports, with a temporary SQLite file and Redis.

Within 60 s, seen through the dashboard's HTTP and the emulators' APIs (never the database):
EIPs were assigned and released, the decoys were never touched, no EIP was ever on two nodes, no node ever
held two pool EIPs, and no workload pod ever ran on a node that still had the startup taint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import requests

from sandbox.ports import free_port, wait_for_port
from tests.fixtures.polling import OneProcess, eventually
from tests.fixtures.processes import own_emulator_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DEADLINE_SECONDS = 60.0
STARTUP_TAINT = "eipdash.io/eip-pending"
ADMIN_PASSWORD = "e2e-admin-password"
POOL_TAGS = {("eipdash.io/pool", "egress-web"), ("eipdash.io/batch-pool", None), ("eipdash.io/pool", "egress-private")}


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    web_url: str = ""
    sandbox_env: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        return process

    def assert_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}\n{self.logs()}")

    def logs(self, lines: int = 25) -> str:
        parts = []
        for name in self.processes:
            text = (self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                _killpg(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in self.processes.values():
            # Whatever is left, and grandchildren (celery's pool) sharing the group.
            _killpg(process, signal.SIGKILL)
            process.wait(timeout=10)


def _killpg(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    redis.Redis.from_url(redis_url).flushdb()  # this worker's own database: no stray task of an earlier test
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="eipdash.settings",
        DJANGO_DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp_path / 'e2e.sqlite3'}",
        REDIS_URL=redis_url,
        EIPDASH_RECONCILE_SECONDS="1",
        EIPDASH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    stack = Stack(tmp=tmp_path, env=env)
    try:
        for command in (["migrate", "--noinput", "-v0"], ["ensure_admin", "--quiet-login",
                                                            "--password-file", str(tmp_path / "pw")]):
            subprocess.run([PYTHON, "manage.py", *command], cwd=ROOT, env=env, check=True, timeout=120)
        state_dir = tmp_path / "sandbox"
        stack.start("sandbox", [
            PYTHON, "manage.py", "sandbox", "--simulate", "--seed", "5", "--state-dir", str(state_dir),
            "--ec2-port", str(free_port()), "--kube-port", str(free_port()),
            # A fast cluster: decisions every 2.5 s, quick drains, and every third decision past the pool.
            "--tick", "0.3", "--scale-every", "2.5", "--evict-every", "0.5", "--drain-grace", "1.5",
            "--pods-per-node", "2", "--overscale-every", "3",
        ])
        env_file = state_dir / "env"
        eventually(env_file.exists, timeout=60, what=f"the sandbox writes {env_file}", stack=stack)
        stack.sandbox_env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
        assert set(stack.sandbox_env) == {"AWS_ENDPOINT_URL_EC2", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                                          "AWS_SECRET_ACCESS_KEY", "KUBECONFIG"}
        env.update(stack.sandbox_env)

        stack.start("worker", [PYTHON, "-m", "celery", "-A", "eipdash", "worker", "--loglevel", "INFO",
                               "--concurrency", "2", "--hostname", f"e2e-{os.getpid()}@%h",
                               "--without-gossip", "--without-mingle"])
        stack.start("beat", [PYTHON, "-m", "celery", "-A", "eipdash", "beat", "--loglevel", "INFO",
                             "--schedule", str(tmp_path / "celerybeat-schedule")])
        web_port = free_port()
        stack.start("web", [PYTHON, "manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload"])
        wait_for_port(web_port, timeout=60)
        stack.web_url = f"http://127.0.0.1:{web_port}"
        yield stack
    finally:
        stack.stop()


def _in_pool(address: dict[str, Any]) -> bool:
    tags = {t["Key"]: t["Value"] for t in address.get("Tags", [])}
    return any(key in tags and (value is None or tags[key] == value) for key, value in POOL_TAGS)


def _kube_server(kubeconfig: str) -> str:
    return str(json.loads(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"])


def _login(web_url: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{web_url}/accounts/login/", timeout=10).raise_for_status()
    response = session.post(
        f"{web_url}/accounts/login/",
        data={"username": "admin", "password": ADMIN_PASSWORD,
              "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        timeout=10,
    )
    response.raise_for_status()
    assert "sessionid" in session.cookies, "login failed"
    return session


def test_the_live_stack_assigns_and_releases_without_ever_doubling_up(stack: Stack) -> None:
    started = time.monotonic()
    ec2 = boto3.client(
        "ec2",
        endpoint_url=stack.sandbox_env["AWS_ENDPOINT_URL_EC2"],
        region_name=stack.sandbox_env["AWS_DEFAULT_REGION"],
        aws_access_key_id=stack.sandbox_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.sandbox_env["AWS_SECRET_ACCESS_KEY"],
    )
    kube = _kube_server(stack.sandbox_env["KUBECONFIG"])

    def association(address: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(address.get(k) for k in ("AssociationId", "NetworkInterfaceId", "PrivateIpAddress"))

    first = ec2.describe_addresses()["Addresses"]
    decoys = {a["AllocationId"]: (association(a), a.get("Tags", [])) for a in first if not _in_pool(a)}
    # The 3 decoys and the NAT gateway's own EIP are in no pool; the pools hold 4 + 3 + 2.
    assert len(decoys) == 4 and len(first) - len(decoys) == 9, first

    ever_associated: set[str] = set()
    released: set[tuple[str, str]] = set()  # (allocation, eni) pairs that ended
    last_eni: dict[str, str] = {}
    untainted_nodes: set[str] = set()
    samples = 0
    history_kinds: set[str] = set()
    session: requests.Session | None = None

    while time.monotonic() - started < DEADLINE_SECONDS:
        stack.assert_alive()
        samples += 1
        addresses = ec2.describe_addresses()["Addresses"]
        pool_eni_count: dict[str, list[str]] = {}
        for address in addresses:
            allocation = address["AllocationId"]
            if allocation in decoys:
                assert (association(address), address.get("Tags", [])) == decoys[allocation], (
                    f"decoy {allocation} was touched: {address}")
                continue
            eni = address.get("NetworkInterfaceId") or ""
            previous = last_eni.get(allocation, "")
            if previous and previous != eni:
                released.add((allocation, previous))
            if eni:
                ever_associated.add(allocation)
                pool_eni_count.setdefault(eni, []).append(address["PublicIp"])
            last_eni[allocation] = eni
        doubled = {eni: ips for eni, ips in pool_eni_count.items() if len(ips) > 1}
        assert not doubled, f"a node holds two pool EIPs: {doubled}"

        nodes = requests.get(f"{kube}/api/v1/nodes", timeout=10).json()["items"]
        labelled: dict[str, list[str]] = {}
        tainted = set()
        for node in nodes:
            name = node["metadata"]["name"]
            ip = node["metadata"].get("labels", {}).get("eipdash.io/eip")
            if ip:
                labelled.setdefault(ip, []).append(name)
            if any(t["key"] == STARTUP_TAINT for t in node["spec"].get("taints") or []):
                tainted.add(name)
            else:
                untainted_nodes.add(name)
        on_two = {ip: names for ip, names in labelled.items() if len(names) > 1}
        assert not on_two, f"an EIP is on two nodes: {on_two}"

        pods = requests.get(f"{kube}/api/v1/namespaces/shop/pods", timeout=10).json()["items"]
        early = [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") in tainted]
        assert not early, f"workload pods on nodes still waiting for their EIP: {early}"

        if len(ever_associated) >= 3 and released and untainted_nodes:
            if session is None:
                session = _login(stack.web_url)
            export = session.get(f"{stack.web_url}/history/export.jsonl", timeout=10)
            export.raise_for_status()
            # The last line is the export's trailer, {"_export": {...}}, not an event.
            records = [json.loads(line) for line in export.text.splitlines() if line.strip()]
            history_kinds = {record["event"] for record in records if "event" in record}
            if {"assigned", "released", "taint_lifted"} <= history_kinds:
                break
        time.sleep(0.25)

    elapsed = time.monotonic() - started
    context = (f"after {elapsed:.0f}s and {samples} samples: associated {len(ever_associated)}, "
               f"released {len(released)}, untainted {len(untainted_nodes)}, history {sorted(history_kinds)}\n"
               f"{stack.logs()}")
    assert len(ever_associated) >= 3, context
    assert released, context
    assert {"assigned", "released", "taint_lifted"} <= history_kinds, context

    # The pages a person would open render the live record.
    assert session is not None
    for page in ("/", "/eips/", "/nodes/", "/history/"):
        response = session.get(stack.web_url + page, timeout=10)
        assert response.status_code == 200, (page, response.status_code)
    assert "egress-web" in session.get(stack.web_url + "/", timeout=10).text
    assert requests.get(f"{stack.web_url}/healthz", timeout=10).status_code == 200


# --- `make run` itself: the supervisor -----------------------------------------------------------------


class RunProcess(OneProcess):
    def wait_for(self, text: str, timeout: float) -> None:
        eventually(lambda: text in self.output(), timeout=timeout, what=f"{text!r} in the output", stack=self)

    def child_pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"started (\w+) \(pid (\d+)\)", self.output())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: its parent (the supervisor) may not have reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[RunProcess, int]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "KUBECONFIG", "PYTEST_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env.update(EIPDASH_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONUNBUFFERED="1")
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [PYTHON, "-m", "sandbox.run", "--port", str(port), "--state-dir", str(tmp_path / "state"),
             *own_emulator_ports()],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    run = RunProcess(process, log, "make run")
    try:
        yield run, port
    finally:
        pids = run.child_pids()
        if process.poll() is None:
            _killpg(process, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _killpg(process, signal.SIGKILL)
                process.wait(timeout=10)
        for pid in pids.values():
            # Each child leads its own process group: nothing it started may outlive the test.
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_make_run_goes_live_and_ctrl_c_stops_every_child(make_run: tuple[RunProcess, int]) -> None:
    run, port = make_run
    run.wait_for("eipdash is live", timeout=90)
    assert f"login: admin / {ADMIN_PASSWORD}" in run.output()
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    pids = run.child_pids()
    assert {"redis", "sandbox", "worker", "beat", "web"} <= set(pids), pids

    _killpg(run.process, signal.SIGINT)  # what Ctrl-C in the terminal sends
    assert run.process.wait(timeout=40) == 0, run.output()[-3000:]
    assert "all processes stopped" in run.output()
    assert [name for name, pid in pids.items() if _alive(pid)] == []


def test_make_run_reports_a_crashed_child_loudly_and_stops_the_rest(make_run: tuple[RunProcess, int]) -> None:
    run, _port = make_run
    run.wait_for("eipdash is live", timeout=90)
    pids = run.child_pids()
    os.kill(pids["worker"], signal.SIGKILL)

    assert run.process.wait(timeout=40) == 1, run.output()[-3000:]
    assert "worker was killed by SIGKILL, on its own: stopping everything" in run.output()
    assert [name for name, pid in pids.items() if _alive(pid)] == []
