"""`make run RUN_ARGS="--clusters 2"`: the supervisor starts a second Kubernetes emulator and a second cluster
(sandbox-eu, eu-west-1) next to the first, and the one worker, beat and watch serve both.

Seen from outside, as a person would check it: the banner and var/sandbox/env name both clusters; through
each cluster's kubeconfig and each region's EC2 API, nodes of both clusters get their region's pool EIPs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from sandbox.ports import free_port
from sandbox.run import read_env_file
from tests.fixtures.polling import OneProcess, eventually
from tests.fixtures.processes import own_emulator_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TAINT = "eipdash.io/eip-pending"
EIP_LABEL = "eipdash.io/eip"


def _server(kubeconfig: Path) -> str:
    return str(json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])


def _served_nodes(kubeconfig: Path) -> list[str]:
    """Nodes of the cluster without the startup taint and with the EIP label: served by eipdash."""
    nodes = requests.get(_server(kubeconfig) + "/api/v1/nodes", timeout=10).json()["items"]
    return [n["metadata"]["name"] for n in nodes
            if EIP_LABEL in (n["metadata"].get("labels") or {})
            and not any(t.get("key") == STARTUP_TAINT for t in n["spec"].get("taints") or [])]


def _associated(env: dict[str, str], region: str, tag: tuple[str, str]) -> list[str]:
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=env["AWS_ENDPOINT_URL_EC2"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    found = ec2.describe_addresses(Filters=[{"Name": f"tag:{tag[0]}", "Values": [tag[1]]}])["Addresses"]
    return [a["AllocationId"] for a in found if a.get("AssociationId")]


@pytest.fixture
def run_two(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "KUBECONFIG", "PYTEST_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env.update(EIPDASH_ADMIN_PASSWORD="e2e-admin-password", PYTHONUNBUFFERED="1")
    log, state = tmp_path / "run.log", tmp_path / "state"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.run", "--port", str(free_port()), "--state-dir", str(state),
             "--clusters", "2", *own_emulator_ports()],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process, log, state
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_make_run_with_two_clusters_serves_both(run_two: tuple[subprocess.Popen[bytes], Path, Path]) -> None:
    process, log, state = run_two
    run = OneProcess(process, log, "make run")
    eventually(lambda: "eipdash is live" in run.output(), timeout=120, what="the banner", stack=run)
    output = log.read_text(errors="replace")
    assert "second cluster: sandbox-eu (eu-west-1), kubeconfig " in output
    env = read_env_file(state / "env")
    first, second = Path(env["KUBECONFIG"]), Path(env["SANDBOX_SECOND_KUBECONFIG"])
    assert env["SANDBOX_SECOND_CLUSTER"] == "sandbox-eu:eu-west-1" and _server(first) != _server(second)

    # Both clusters' nodes are served, each from its own region's pool.
    unanswered = (AssertionError, OSError, requests.RequestException, KeyError)
    eventually(lambda: _served_nodes(second) and _associated(env, "eu-west-1", ("eipdash.io/pool", "egress-eu")),
               timeout=90, what="a node of sandbox-eu served from the eu-west-1 pool", stack=run, ignoring=unanswered,
               interval=0.5)
    eventually(lambda: _served_nodes(first) and _associated(env, "us-east-1", ("eipdash.io/pool", "egress-web")),
               timeout=90, what="a node of the first cluster served from the us-east-1 pool", stack=run,
               ignoring=unanswered, interval=0.5)
    assert not _associated(env, "us-east-1", ("eipdash.io/pool", "egress-eu"))
    # EC2's private DNS names of each region.
    assert all(name.endswith(".eu-west-1.compute.internal") for name in _served_nodes(second))
    assert all(name.endswith(".ec2.internal") for name in _served_nodes(first))

    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=40) == 0, log.read_text()[-3000:]
