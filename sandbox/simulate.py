"""The scale simulation: plays the cluster autoscaler, the scheduler and the kubelets around eipdash.

It touches the world only through the emulators' public APIs: boto3 to the EC2 emulator (through
:class:`sandbox.ec2_emulator.Ec2World`) and plain HTTP to the Kubernetes API emulator. It never reads the
database nor imports eipdash's engine, so what the dashboard shows is what eipdash really did.

The autoscaler's script (how many nodes each launch spec wants, which node it drains) is a pure function of
``--seed``: two runs with the same seed make the same decisions. How fast eipdash answers them can still
differ from run to run, as it would in a real cluster.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from pools.keys import STARTUP_TAINT_KEY

log = logging.getLogger("sandbox.simulate")

CA_TAINT_KEY = "ToBeDeletedByClusterAutoscaler"
# Node names as EKS gives them with resource-based hostnames: unique per instance, so a fresh sandbox
# never reuses the name of a node from an earlier run.
NODE_NAME_SUFFIX = ".ec2.internal"


def node_name_suffix(region: str) -> str:
    """EC2's private DNS suffix: `.ec2.internal` in us-east-1, `.<region>.compute.internal` elsewhere."""
    return NODE_NAME_SUFFIX if region == "us-east-1" else f".{region}.compute.internal"
SIMULATED_LABEL = "sandbox.eipdash.io/simulated"
DAEMONSETS = ("aws-node", "kube-proxy")
WORKLOAD_NAMESPACE = "shop"


@dataclass(frozen=True)
class SimSpec:
    """What the autoscaler knows about one node group: its labels and how many EIPs its pool holds."""

    name: str
    labels: dict[str, str]
    pool_size: int
    min_nodes: int = 1


@dataclass(frozen=True)
class Pace:
    """How fast the simulated cluster moves. Every field is a command-line flag of `manage.py sandbox`."""

    tick_seconds: float = 1.0
    # Time between two autoscaler decisions for each launch spec.
    scale_every_seconds: float = 8.0
    # A draining node loses one workload pod per this many seconds, as a PodDisruptionBudget paces it.
    evict_every_seconds: float = 1.5
    # After the last eviction the autoscaler waits this long before terminating: eipdash releases here.
    drain_grace_seconds: float = 6.0
    pods_per_node: int = 3
    # Every Nth decision of a spec asks for more nodes than its pool holds, so exhaustion shows.
    overscale_every: int = 4
    # Scale-ups arrive in small batches, as a real autoscaler's do.
    max_launch_per_decision: int = 2


@dataclass(frozen=True)
class Decision:
    """One autoscaler decision: ``target`` active nodes for ``spec``; ``pick`` in [0, 1) chooses a victim."""

    round: int
    spec: str
    target: int
    pick: float


def decisions(seed: int, specs: Sequence[SimSpec], pace: Pace) -> Iterator[Decision]:
    """The autoscaler's script: an endless, deterministic sequence of decisions, one per spec per round."""
    rng = random.Random(seed)
    for round_index in itertools.count():
        for spec in specs:
            overscale = pace.overscale_every > 0 and round_index % pace.overscale_every == pace.overscale_every - 1
            if overscale:
                target = spec.pool_size + rng.randint(1, 2)
            else:
                target = rng.randint(spec.min_nodes, max(spec.min_nodes, spec.pool_size))
            yield Decision(round=round_index, spec=spec.name, target=target, pick=rng.random())


# --- The Kubernetes side: plain HTTP, as any client of the API would do ------------------------------


class KubeConflict(Exception):
    """409: the object changed since we read it (resourceVersion precondition)."""


class KubeHttp:
    """The few calls of the Kubernetes REST API that the autoscaler, scheduler and kubelets make."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
              content_type: str = "application/json", ok_missing: bool = False) -> Any:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        # One session, one connection: requests.Session is not meant to be shared across threads.
        with self._lock:
            response = self._session.request(
                method, self.base_url + path, json=json, params=params, headers=headers, timeout=self.timeout
            )
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code == 409:
            raise KubeConflict(f"{method} {path}: {response.text[:200]}")
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def list_nodes(self, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        return list(self._call("GET", "/api/v1/nodes", params=params)["items"])

    def get_node(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("GET", f"/api/v1/nodes/{name}", ok_missing=True)
        return result

    def create_node(self, manifest: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/v1/nodes", json=manifest)
        return result

    def merge_patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PATCH", f"/api/v1/nodes/{name}", json=patch, content_type="application/merge-patch+json"
        )
        return result

    def merge_patch_node_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """What the node controller writes through the status subresource (a NotReady node)."""
        result: dict[str, Any] = self._call(
            "PATCH", f"/api/v1/nodes/{name}/status", json=patch, content_type="application/merge-patch+json"
        )
        return result

    def delete_node(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/nodes/{name}", ok_missing=True)

    def create_running_pod(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        self._call("POST", f"/api/v1/namespaces/{namespace}/pods", json=manifest)
        # The API server resets status on create; reporting Running is the kubelet's job.
        self._call(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            json={"status": {"phase": "Running"}},
            content_type="application/merge-patch+json",
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", ok_missing=True)

    def evict_pod(self, namespace: str, name: str) -> None:
        """The Eviction API, as `kubectl drain` and the autoscaler use it."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        self._call("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", json=body, ok_missing=True)

    def ensure_namespace(self, name: str) -> None:
        try:
            self._call("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": name}})
        except KubeConflict:
            pass

    def pods_on(self, node_name: str) -> list[dict[str, Any]]:
        return list(
            self._call("GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node_name}"})["items"]
        )


def blocking_taints(node: dict[str, Any]) -> list[str]:
    """The taints that keep the scheduler from placing an ordinary (non-tolerating) pod on the node."""
    taints = (node.get("spec") or {}).get("taints") or []
    return [t["key"] for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")]


def schedulable(node: dict[str, Any]) -> bool:
    spec = node.get("spec") or {}
    return not spec.get("unschedulable") and not blocking_taints(node) and not node["metadata"].get(
        "deletionTimestamp"
    )


def node_manifest(*, name: str, instance_id: str, az: str, private_ip: str, region: str,
                  labels: dict[str, str]) -> dict[str, Any]:
    """A node as a kubelet started with ``--register-with-taints=eipdash.io/eip-pending:NoSchedule`` sends it."""
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "m5.large",
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": az,
        SIMULATED_LABEL: "true",
        **labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {
            "providerID": f"aws:///{az}/{instance_id}",
            "taints": [{"key": STARTUP_TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [
                {"type": "InternalIP", "address": private_ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def pod_manifest(*, name: str, namespace: str, node_name: str, owner_kind: str, owner_name: str,
                 tolerate_all: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node_name,
        "containers": [{"name": "main", "image": "public.ecr.aws/docker/library/busybox:stable"}],
    }
    if tolerate_all:
        # DaemonSet pods tolerate every taint: they must run before the node is ready for workloads.
        spec["tolerations"] = [{"operator": "Exists"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": owner_name},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": owner_name,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{owner_kind}/{owner_name}")),
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


# --- The EC2 side ------------------------------------------------------------------------------------


class Ec2Side(Protocol):
    """What the autoscaler needs from EC2 (satisfied by sandbox.ec2_emulator.Ec2World)."""

    region: str

    def ensure_network(self) -> dict[str, str]: ...

    def launch_instance(self, az: str | None = None, extra_enis: int = 0) -> tuple[str, str, str]: ...

    def terminate(self, instance_id: str, drop_associations: bool = True) -> None: ...


# Starts one instance: (instance_id, primary_eni_id, private_ip), like Ec2Side.launch_instance.
Launch = Callable[[], tuple[str, str, str]]


# --- The simulation ----------------------------------------------------------------------------------


@dataclass
class SimNode:
    spec: str
    ordinal: int
    name: str
    instance_id: str
    az: str
    workload_pods: list[str] = field(default_factory=list)
    daemon_pods: list[tuple[str, str]] = field(default_factory=list)
    draining_since: float | None = None
    last_eviction_at: float = 0.0
    drained_at: float | None = None


@dataclass
class Counters:
    launched: int = 0
    terminated: int = 0
    pods_scheduled: int = 0
    pods_evicted: int = 0
    cordoned: int = 0
    errors: int = 0


class Simulation:
    """One simulated cluster. Call :meth:`launch_node` to seed it, then :meth:`run` (or :meth:`step`)."""

    def __init__(self, *, ec2: Ec2Side, kube: KubeHttp, specs: Sequence[SimSpec], seed: int = 1,
                 pace: Pace | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ec2 = ec2
        self.kube = kube
        self.specs = {spec.name: spec for spec in specs}
        self.pace = pace or Pace()
        self.clock = clock
        self.counters = Counters()
        self.nodes: dict[str, SimNode] = {}
        self._script = decisions(seed, list(specs), self.pace)
        self._ordinals = itertools.count()
        self._pod_numbers = itertools.count(1)
        self._zones: list[str] = []
        # Launch specs pinned to one subnet: spec name -> (its zone, how to start an instance there).
        self._subnets: dict[str, tuple[str, Launch]] = {}
        self._next_scale_at = clock() + self.pace.scale_every_seconds

    def place_in_subnet(self, spec_name: str, az: str, launch: Launch) -> None:
        """Start every node of ``spec_name`` from now on with ``launch``, in one subnet of zone ``az``.

        A node group tied to one subnet (the sandbox's private one, behind a NAT gateway) is how a cluster
        sends a group's egress another way; the other groups spread over the zones of ``ensure_network``."""
        self._subnets[spec_name] = (az, launch)

    # -- autoscaler: scale up ------------------------------------------------------------------------

    def launch_node(self, spec_name: str, name: str | None = None) -> SimNode:
        """Launch an instance and register its node with the startup taint, as a kubelet would.

        `name`: register under this node name (EKS reuses `ip-…` names for a new instance)."""
        spec = self.specs[spec_name]
        if not self._zones:
            self._zones = sorted(self.ec2.ensure_network())
            self.kube.ensure_namespace(WORKLOAD_NAMESPACE)
        ordinal = next(self._ordinals)
        az, launch = self._placement(spec_name, ordinal)
        instance_id, _eni_id, private_ip = launch()
        name = name or f"{instance_id}{node_name_suffix(self.ec2.region)}"
        self.kube.create_node(
            node_manifest(name=name, instance_id=instance_id, az=az, private_ip=private_ip,
                          region=self.ec2.region, labels=spec.labels)
        )
        node = SimNode(spec=spec_name, ordinal=ordinal, name=name, instance_id=instance_id, az=az)
        self.nodes[name] = node
        # DaemonSet pods land at once: they tolerate the startup taint.
        for daemonset in DAEMONSETS:
            pod_name = f"{daemonset}-{instance_id[-8:]}"
            self.kube.create_running_pod(
                pod_manifest(name=pod_name, namespace="kube-system", node_name=name, owner_kind="DaemonSet",
                             owner_name=daemonset, tolerate_all=True)
            )
            node.daemon_pods.append(("kube-system", pod_name))
        self.counters.launched += 1
        log.info("launched %s for %s (%s, %s)", name, spec_name, az, self._summary(spec_name))
        return node

    def _placement(self, spec_name: str, ordinal: int) -> tuple[str, Launch]:
        """The zone of the next node of ``spec_name`` and how to start its instance."""
        pinned = self._subnets.get(spec_name)
        if pinned is not None:
            return pinned
        az = self._zones[ordinal % len(self._zones)]
        return az, lambda: self.ec2.launch_instance(az=az)

    # -- one tick ------------------------------------------------------------------------------------

    def step(self) -> None:
        """One tick of every actor: scheduler, autoscaler, drainer. One failing actor never stops the rest."""
        now = self.clock()
        for actor in (self._schedule, self._autoscale, self._drain):
            try:
                actor(now)
            except Exception:
                self.counters.errors += 1
                log.exception("simulation step %s failed; trying again next tick", actor.__name__)

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        started = self.clock()
        while not stop.is_set():
            self.step()
            if duration is not None and self.clock() - started >= duration:
                return
            stop.wait(self.pace.tick_seconds)

    def _active(self, spec_name: str) -> list[SimNode]:
        return sorted(
            (n for n in self.nodes.values() if n.spec == spec_name and n.draining_since is None),
            key=lambda n: n.ordinal,
        )

    def _summary(self, spec_name: str) -> str:
        active = len(self._active(spec_name))
        draining = sum(1 for n in self.nodes.values() if n.spec == spec_name and n.draining_since is not None)
        return f"{active} active, {draining} draining, pool {self.specs[spec_name].pool_size}"

    # -- scheduler + kubelet -------------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        live = {n["metadata"]["name"]: n for n in self.kube.list_nodes(f"{SIMULATED_LABEL}=true")}
        for node in sorted(self.nodes.values(), key=lambda n: n.ordinal):
            api_node = live.get(node.name)
            if api_node is None or node.draining_since is not None:
                continue
            # One pod per node per tick: a deployment rolling out, not a burst.
            if len(node.workload_pods) < self.pace.pods_per_node and schedulable(api_node):
                pod_name = f"{node.spec}-app-{next(self._pod_numbers):05d}"
                self.kube.create_running_pod(
                    pod_manifest(name=pod_name, namespace=WORKLOAD_NAMESPACE, node_name=node.name,
                                 owner_kind="ReplicaSet", owner_name=f"{node.spec}-app")
                )
                node.workload_pods.append(pod_name)
                self.counters.pods_scheduled += 1

    # -- autoscaler ----------------------------------------------------------------------------------

    def _autoscale(self, now: float) -> None:
        if now < self._next_scale_at:
            return
        self._next_scale_at = now + self.pace.scale_every_seconds
        for _ in range(len(self.specs)):
            decision = next(self._script)
            self._apply(decision)

    def _apply(self, decision: Decision) -> None:
        active = self._active(decision.spec)
        if decision.target > len(active):
            wanted = min(decision.target - len(active), self.pace.max_launch_per_decision)
            log.info("autoscaler: %s wants %d nodes (has %d): scaling up by %d",
                     decision.spec, decision.target, len(active), wanted)
            for _ in range(wanted):
                self.launch_node(decision.spec)
        elif decision.target < len(active):
            log.info("autoscaler: %s wants %d nodes (has %d): draining one",
                     decision.spec, decision.target, len(active))
            self.drain(self._victim(active, decision.pick))

    def _victim(self, active: list[SimNode], pick: float) -> SimNode:
        # Nodes that never became ready (no EIP yet, no workload) are the cheapest to remove.
        live = {n["metadata"]["name"]: n for n in self.kube.list_nodes(f"{SIMULATED_LABEL}=true")}
        waiting = [n for n in active if n.name in live and STARTUP_TAINT_KEY in blocking_taints(live[n.name])]
        if waiting:
            return waiting[-1]
        return active[min(int(pick * len(active)), len(active) - 1)]

    def drain(self, node: SimNode) -> None:
        """Cordon and taint like the cluster autoscaler, never dropping a taint someone else set meanwhile."""
        for _attempt in range(5):
            current = self.kube.get_node(node.name)
            if current is None:
                break
            taints = list((current.get("spec") or {}).get("taints") or [])
            taints.append({"key": CA_TAINT_KEY, "value": str(int(time.time())), "effect": "NoSchedule"})
            patch = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"unschedulable": True, "taints": taints},
            }
            try:
                self.kube.merge_patch_node(node.name, patch)
                break
            except KubeConflict:
                continue
        node.draining_since = self.clock()
        node.last_eviction_at = node.draining_since
        self.counters.cordoned += 1

    # -- drainer -------------------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        for node in [n for n in self.nodes.values() if n.draining_since is not None]:
            if node.workload_pods:
                if now - node.last_eviction_at >= self.pace.evict_every_seconds:
                    pod_name = node.workload_pods.pop(0)
                    self.kube.evict_pod(WORKLOAD_NAMESPACE, pod_name)
                    node.last_eviction_at = now
                    self.counters.pods_evicted += 1
                if node.workload_pods:
                    continue
            if node.drained_at is None:
                node.drained_at = now
            elif now - node.drained_at >= self.pace.drain_grace_seconds:
                self._remove(node)

    def _remove(self, node: SimNode) -> None:
        # The autoscaler terminates the instance (AWS drops its EIP association with it); the node object
        # and its DaemonSet pods then go away as the cloud node controller and the pod GC would do.
        self.ec2.terminate(node.instance_id, drop_associations=True)
        for namespace, pod_name in node.daemon_pods:
            self.kube.delete_pod(namespace, pod_name)
        self.kube.delete_node(node.name)
        del self.nodes[node.name]
        self.counters.terminated += 1
        log.info("terminated %s of %s (%s)", node.name, node.spec, self._summary(node.spec))
