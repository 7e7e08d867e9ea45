"""Kubernetes Events on the Node (events.k8s.io/v1), read back with the official client from the emulator."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from prometheus_client import REGISTRY

from pools.models import Event
from tests.fixtures.world import TAINT, World
from workers import executor, kube_events
from workers.kube import Kube
from workers.kube_events import CONTROLLER, Emitter


def node_events(kubeconfig: Path, node: str) -> list[Any]:
    api = client.EventsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    return list(api.list_namespaced_event("default", field_selector=f"regarding.name={node}").items)


def test_an_assignment_is_told_on_the_node(world: World, kube_env: Path,
                                           django_capture_on_commit_callbacks: Any) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    with django_capture_on_commit_callbacks(execute=True):
        report = executor.reconcile_spec(spec.pk)
    assert not report.errors and world.eip_on("a")
    assert kube_events.wait_idle()

    events = node_events(kube_env, "a")
    assigned = [e for e in events if e.reason == "EIPAssigned"]
    assert len(assigned) == 1, [e.reason for e in events]
    event = assigned[0]
    ip = world.address(world.eip_on("a") or "")["PublicIp"]
    assert event.reporting_controller == CONTROLLER and event.reporting_instance
    assert event.type == "Normal" and event.action == "Assign" and ip in event.note
    # The node's uid: what `kubectl describe node` matches events on.
    assert event.regarding.kind == "Node" and event.regarding.name == "a"
    assert event.regarding.uid == world.kube.get("nodes", "a")["metadata"]["uid"]


def test_pool_exhausted_is_told_on_the_waiting_node(world: World, kube_env: Path,
                                                    django_capture_on_commit_callbacks: Any) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    world.node("b")
    with django_capture_on_commit_callbacks(execute=True):
        executor.reconcile_spec(spec.pk)
    assert kube_events.wait_idle()
    (waiting,) = [n for n in ("a", "b") if world.eip_on(n) is None]
    assert TAINT in world.taints(waiting)
    reasons = [(e.type, e.reason) for e in node_events(kube_env, waiting)]
    assert ("Warning", "EIPPoolExhausted") in reasons
    # The node that got the EIP is not told the pool ran out.
    (served,) = {"a", "b"} - {waiting}
    assert "EIPPoolExhausted" not in [e.reason for e in node_events(kube_env, served)]


def test_a_kubernetes_api_that_refuses_events_never_fails_the_step(
    world: World, kube_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    # The pass talks to the emulator; the events go through KUBECONFIG, which now points at a closed port.
    working = Kube(config_file=str(kube_env))
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(kube_env.read_text().replace(world.kube.url, "http://127.0.0.1:9"))
    monkeypatch.setenv("KUBECONFIG", str(dead))
    before = REGISTRY.get_sample_value("eipdash_kube_calls_total", {"verb": "get", "outcome": "transient"}) or 0.0
    with django_capture_on_commit_callbacks(execute=True):
        report = executor.reconcile_spec(spec.pk, kube=working)
    assert not report.errors
    assert kube_events.wait_idle(timeout=30)
    assert world.eip_on("a") and TAINT not in world.taints("a")
    assert not Event.objects.filter(kind="error").exists()
    assert node_events(kube_env, "a") == []
    after = REGISTRY.get_sample_value("eipdash_kube_calls_total", {"verb": "get", "outcome": "transient"})
    assert after is not None and after > before


def gate_deliveries(monkeypatch: pytest.MonkeyPatch, size: int) -> threading.Event:
    """A fresh emitter of `size` whose thread waits for the returned gate before each delivery."""
    gate = threading.Event()
    real = kube_events.deliver

    def gated(emission: kube_events.Emission) -> int:
        gate.wait(timeout=60)
        return real(emission)

    monkeypatch.setattr(kube_events, "emitter", Emitter(size))
    monkeypatch.setattr(kube_events, "deliver", gated)
    return gate


def test_the_events_are_written_off_the_pass_thread(world: World, kube_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                    django_capture_on_commit_callbacks: Any) -> None:
    """The pass ends (EIP on, taint lifted) while its event waits for the background thread; it lands after."""
    gate = gate_deliveries(monkeypatch, size=10)
    spec = world.spec()
    world.eips(1)
    world.node("a")
    with django_capture_on_commit_callbacks(execute=True):
        report = executor.reconcile_spec(spec.pk)
    assert not report.errors and world.eip_on("a") and TAINT not in world.taints("a")
    assert node_events(kube_env, "a") == []
    gate.set()
    assert kube_events.wait_idle()
    assert [e.reason for e in node_events(kube_env, "a")] == ["EIPAssigned"]


def test_a_full_queue_drops_events_without_holding_the_pass(world: World, kube_env: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            django_capture_on_commit_callbacks: Any) -> None:
    """One event in the thread, one queued: of three assignments' events at least one is dropped and counted,
    and the pass still serves every node."""
    gate = gate_deliveries(monkeypatch, size=1)
    spec = world.spec()
    world.eips(3)
    for name in ("a", "b", "c"):
        world.node(name)
    dropped = {"verb": "create", "outcome": "dropped"}
    before = REGISTRY.get_sample_value("eipdash_kube_calls_total", dropped) or 0.0
    with django_capture_on_commit_callbacks(execute=True):
        report = executor.reconcile_spec(spec.pk)
    assert not report.errors
    assert all(world.eip_on(n) and TAINT not in world.taints(n) for n in ("a", "b", "c"))
    lost = (REGISTRY.get_sample_value("eipdash_kube_calls_total", dropped) or 0.0) - before
    assert lost >= 1
    gate.set()
    assert kube_events.wait_idle()
    written = sum(1 for n in ("a", "b", "c") for e in node_events(kube_env, n) if e.reason == "EIPAssigned")
    assert written == 3 - lost


def test_adding_the_startup_taint_is_told_on_the_node(world: World, kube_env: Path) -> None:
    """A change with no history event of its own (a schedulable node without an EIP is tainted) is still told
    by `kubectl describe node`."""
    spec = world.spec()
    world.node("plain", tainted=False)  # registered without the startup taint, and the pool is empty
    executor.reconcile_spec(spec.pk)
    assert TAINT in world.taints("plain")
    assert kube_events.wait_idle()
    pending = [e for e in node_events(kube_env, "plain") if e.reason == "EIPPending"]
    assert len(pending) == 1 and pending[0].type == "Normal" and "startup taint added" in pending[0].note
