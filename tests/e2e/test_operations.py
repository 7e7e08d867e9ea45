"""Metrics, Kubernetes events and health on the running stack: a real Celery worker and beat on Redis, both
emulators, the test database; /metrics and /healthz answered by the real views from what the worker wrote."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World

pytestmark = pytest.mark.e2e

TOKEN = "e2e-metrics-token"


def sample(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the exposition text, or None."""
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def scrape() -> str:
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return response.content.decode()


def test_metrics_events_and_health_after_real_passes(
    stack: Stack, world_tx: World, tmp_path: Path, kube_env: Path, monkeypatch: pytest.MonkeyPatch,
    settings: object,
) -> None:
    world = world_tx
    settings.EIPDASH_METRICS_TOKEN = TOKEN  # type: ignore[attr-defined]
    # As the stack's beat.
    settings.EIPDASH_RECONCILE_SECONDS = 1  # type: ignore[attr-defined]
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    # The worker writes its counters there; this process's /metrics view reads them from there.
    stack.env["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    stack.env["EIPDASH_METRICS_PORT"] = str(_free_port())
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom_dir))

    spec = world.spec()
    world.eips(2)
    world.node("n1")
    world.node("n2")
    stack.worker()
    stack.beat()

    eventually(lambda: all(world.eip_on(n) and TAINT not in world.taints(n) for n in ("n1", "n2")),
               timeout=60, stack=stack, what="both nodes assigned and untainted")

    # Metrics: counted by the worker process where the calls and the confirmation happened.
    def counted() -> str | None:
        body = scrape()
        associate = sample(body, "eipdash_aws_calls_total", action="AssociateAddress", outcome="ok")
        ready = sample(body, "eipdash_time_to_eip_seconds_count")
        # A pass's duration is observed when it ends, after its taint lifts, and the Kubernetes Events are
        # created by a background thread: a scrape can come before either.
        passes = sample(body, "eipdash_reconcile_duration_seconds_count", spec=spec.name) or 0
        events = sample(body, "eipdash_kube_calls_total", verb="create", outcome="ok") or 0
        return body if associate == 2 and ready == 2 and passes >= 1 and events >= 2 else None

    body = eventually(counted, timeout=20, stack=stack,
                      what="AssociateAddress, time_to_eip, a pass's duration and the events counted")
    assert (sample(body, "eipdash_aws_calls_total", action="DescribeAddresses", outcome="ok") or 0) > 0
    assert (sample(body, "eipdash_kube_calls_total", verb="patch", outcome="ok") or 0) >= 2
    assert sample(body, "eipdash_events_total", kind="assigned") == 2
    assert sample(body, "eipdash_pool_in_use", launch_spec=spec.name) == 2
    assert (sample(body, "eipdash_last_successful_pass_timestamp_seconds", spec=spec.name) or 0) > 0

    # The worker's own port serves the same counters (for pods that do not share a directory with the web).
    port = stack.env["EIPDASH_METRICS_PORT"]
    worker_body = eventually(lambda: _get(f"http://127.0.0.1:{port}/metrics"), timeout=20, stack=stack,
                             what="the worker's metrics port")
    assert sample(worker_body, "eipdash_aws_calls_total", action="AssociateAddress", outcome="ok") == 2

    # Kubernetes events on the nodes, read back with the official client.
    api = k8s.EventsV1Api(k8s_config.new_client_from_config(config_file=str(kube_env)))
    for node in ("n1", "n2"):
        # Written by the worker's background events thread: eventually, not with the pass.
        def assigned(node: str = node) -> list[Any]:
            events = api.list_namespaced_event("default", field_selector=f"regarding.name={node}").items
            return [e for e in events if e.reason == "EIPAssigned"]

        found = eventually(assigned, timeout=20, stack=stack, what=f"the EIPAssigned event of {node}")
        assert len(found) == 1 and found[0].reporting_controller == "eipdash.io/controller"

    # Health: 200 while passes succeed; 503 with the reason once they stop for more than 3 intervals.
    # Names and pass ages need a reader or the metrics token; an anonymous probe gets the status and counts.
    health = Client().get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert health.status_code == 200, health.content
    assert health.json()["launch_specs"][spec.name]["stale"] is False
    for name, process, _ in stack.processes:
        if name in ("worker", "beat") and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    def stale() -> dict[str, object] | None:
        response = Client().get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        return response.json() if response.status_code == 503 else None

    report = eventually(stale, timeout=30, what="/healthz answers 503 once passes stop")
    assert any(spec.name in problem and "last successful pass" in problem for problem in report["problems"])
    # The web's own probe only checks what the web needs.
    assert Client().get("/healthz?scope=web").status_code == 200


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.read().decode()
    except OSError:
        return None
