"""The scale simulation against the real emulators: the test plays eipdash (lifting taints, associating EIPs)
and checks what the simulated autoscaler, scheduler and kubelets did to EC2 and Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.kube_emulator import KubeEmulator
from sandbox.simulate import (
    CA_TAINT_KEY,
    STARTUP_TAINT_KEY,
    WORKLOAD_NAMESPACE,
    Decision,
    KubeHttp,
    Pace,
    SimSpec,
    Simulation,
    decisions,
)

WEB = SimSpec(name="egress-web", labels={"eipdash.io/node-group": "egress-web"}, pool_size=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def simulation(ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator, clock: FakeClock) -> Simulation:
    pace = Pace(scale_every_seconds=1000.0, evict_every_seconds=2.0, drain_grace_seconds=3.0, pods_per_node=2)
    return Simulation(ec2=Ec2World(ec2_emulator.endpoint_url), kube=KubeHttp(kube_emulator.url), specs=[WEB],
                      seed=7, pace=pace, clock=clock)


def lift_startup_taint(kube: KubeEmulator, name: str) -> None:
    """What eipdash does once the EIP is confirmed."""
    def without_taint(node: dict[str, Any]) -> dict[str, Any]:
        node["spec"]["taints"] = [t for t in node["spec"].get("taints", []) if t["key"] != STARTUP_TAINT_KEY]
        return node

    kube.update("nodes", name, without_taint)


def workload_pods(kube: KubeEmulator, node: str) -> list[dict[str, Any]]:
    return [p for p in kube.list_objects("pods", field_selector=f"spec.nodeName={node}")
            if p["metadata"]["namespace"] == WORKLOAD_NAMESPACE]


def test_the_autoscaler_script_is_a_function_of_the_seed() -> None:
    specs = [WEB, SimSpec(name="egress-batch", labels={"a": "b"}, pool_size=3)]
    pace = Pace(overscale_every=4)

    def first(seed: int) -> list[Decision]:
        script = decisions(seed, specs, pace)
        return [next(script) for _ in range(40)]

    assert first(3) == first(3)
    assert first(3) != first(4)
    for decision in first(3):
        pool = 2 if decision.spec == "egress-web" else 3
        if decision.round % 4 == 3:
            # Every fourth round scales past the pool, so that exhaustion shows on the dashboard.
            assert pool < decision.target <= pool + 2
        else:
            assert 1 <= decision.target <= pool
        assert 0 <= decision.pick < 1


def test_a_launched_node_registers_tainted_with_its_instance_and_daemonset_pods(
    simulation: Simulation, kube_emulator: KubeEmulator, ec2_emulator: Ec2Emulator
) -> None:
    node = simulation.launch_node("egress-web")

    stored = kube_emulator.get("nodes", node.name)
    assert stored["spec"]["providerID"] == f"aws:///{node.az}/{node.instance_id}"
    assert {"key": STARTUP_TAINT_KEY, "value": "true", "effect": "NoSchedule"} in stored["spec"]["taints"]
    assert stored["metadata"]["labels"]["eipdash.io/node-group"] == "egress-web"
    instance = Ec2World(ec2_emulator.endpoint_url).client.describe_instances(InstanceIds=[node.instance_id])
    assert instance["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"

    pods = kube_emulator.list_objects("pods", field_selector=f"spec.nodeName={node.name}")
    assert sorted(p["metadata"]["ownerReferences"][0]["kind"] for p in pods) == ["DaemonSet", "DaemonSet"]
    assert {p["status"]["phase"] for p in pods} == {"Running"}


def test_workload_pods_land_only_on_untainted_nodes(
    simulation: Simulation, kube_emulator: KubeEmulator, clock: FakeClock
) -> None:
    tainted = simulation.launch_node("egress-web")
    ready = simulation.launch_node("egress-web")
    for _ in range(3):
        simulation.step()
        clock.now += 1
    assert workload_pods(kube_emulator, tainted.name) == []
    assert workload_pods(kube_emulator, ready.name) == []

    lift_startup_taint(kube_emulator, ready.name)
    for _ in range(4):
        simulation.step()
        clock.now += 1

    assert workload_pods(kube_emulator, tainted.name) == []
    pods = workload_pods(kube_emulator, ready.name)
    assert len(pods) == 2  # pods_per_node
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    assert simulation.counters.errors == 0


def test_a_drain_evicts_over_time_then_terminates_and_drops_the_association(
    simulation: Simulation, kube_emulator: KubeEmulator, ec2_emulator: Ec2Emulator, clock: FakeClock
) -> None:
    world = Ec2World(ec2_emulator.endpoint_url)
    node = simulation.launch_node("egress-web")
    lift_startup_taint(kube_emulator, node.name)
    for _ in range(3):
        simulation.step()
        clock.now += 1
    assert len(workload_pods(kube_emulator, node.name)) == 2
    # The test plays eipdash: the node's EIP on its primary ENI.
    allocation_id, _ = world.allocate_eip({"eipdash.io/pool": "egress-web"})
    reservation = world.client.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]
    eni = reservation["Instances"][0]["NetworkInterfaces"][0]
    world.client.associate_address(AllocationId=allocation_id, NetworkInterfaceId=eni["NetworkInterfaceId"],
                                   PrivateIpAddress=eni["PrivateIpAddress"], AllowReassociation=False)

    simulation.drain(node)
    cordoned = kube_emulator.get("nodes", node.name)
    assert cordoned["spec"]["unschedulable"] is True
    assert CA_TAINT_KEY in [t["key"] for t in cordoned["spec"]["taints"]]

    clock.now += 2
    simulation.step()
    assert len(workload_pods(kube_emulator, node.name)) == 1, "evictions are paced, not all at once"
    clock.now += 2
    simulation.step()
    assert workload_pods(kube_emulator, node.name) == []
    # Drained but within the grace period: the node and its EIP are still there (eipdash releases now).
    assert world.address(allocation_id).get("AssociationId")
    kube_emulator.get("nodes", node.name)

    clock.now += 3.5
    simulation.step()
    assert kube_emulator.list_objects("nodes", field_selector=f"metadata.name={node.name}") == []
    assert kube_emulator.list_objects("pods", field_selector=f"spec.nodeName={node.name}") == []
    state = world.client.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")
    assert not world.address(allocation_id).get("AssociationId"), "terminate drops the association, as AWS"


def test_the_autoscaler_scales_past_the_pool(
    ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator, clock: FakeClock
) -> None:
    pace = Pace(scale_every_seconds=5.0, overscale_every=1, max_launch_per_decision=5)
    simulation = Simulation(ec2=Ec2World(ec2_emulator.endpoint_url), kube=KubeHttp(kube_emulator.url),
                            specs=[WEB], seed=1, pace=pace, clock=clock)
    simulation._next_scale_at = clock.now
    simulation.step()

    nodes = kube_emulator.list_objects("nodes", label_selector="eipdash.io/node-group=egress-web")
    assert len(nodes) > WEB.pool_size
    assert all(STARTUP_TAINT_KEY in [t["key"] for t in n["spec"]["taints"]] for n in nodes)


def test_the_compose_relay_carries_api_calls_to_a_loopback_emulator(kube_emulator: KubeEmulator) -> None:
    import threading

    import requests

    from sandbox.management.commands.sandbox import relay
    from sandbox.ports import free_port

    stop = threading.Event()
    port = free_port()
    server = relay(port, int(kube_emulator.port or 0), stop, host="127.0.0.1")
    try:
        kube_emulator.create("nodes", {"metadata": {"name": "through-the-relay"}})
        response = requests.get(f"http://127.0.0.1:{port}/api/v1/nodes", timeout=5)
        assert [n["metadata"]["name"] for n in response.json()["items"]] == ["through-the-relay"]
    finally:
        stop.set()
        server.close()
