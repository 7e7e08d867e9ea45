"""`make chaos`: a seeded fault campaign against the real engine, on loopback, with the invariants sampled.

What runs:

    moto          the EC2 emulator, in a thread of this process
    fault proxy   in front of moto (sandbox.faults): RequestLimitExceeded, 500s, held connections, 500s after
                  the call went through. The engine's processes reach EC2 only through it.
    kube          the Kubernetes API emulator with its seeded faults on (409s, 500s, cut watches); this
                  process (the cluster's actors and the checker) uses its fault-free side door.
    redis         an embedded valkey-server, restarted now and then (every lease, budget and reading is lost
                  with it), or --redis-url (then not restarted)
    workers       two celery workers, one of them with its clock 30 s ahead (libfaketime); each SIGKILLed now
                  and then and started again, and frozen now and then (SIGSTOP of its whole process group for
                  longer than a lease, then SIGCONT: it goes on exactly where it was)
    beat, watch   celery beat and manage.py watch_nodes

The cluster's actors (the sandbox simulation, plus chaos): nodes scale up and down; drains by cordon, by the
cluster autoscaler's taint or by Karpenter's, some called off again; replacements (an instance terminated
without a drain and its node name registered again on a new instance); spot interruptions (an instance
terminated at once while its Node stays listed, NotReady and tainted unreachable, for a while before it is
deleted); workload pods on draining nodes that go away after a while. Everything the actors do is decided by
``--seed``; how fast the engine answers is not.

The faulty phase runs until every asked-for count is reached (faults, kills, freezes, spot interruptions,
Redis restarts), within a time cap: the counts do not depend on how fast the machine is. The checker
(workers.invariants) samples the world all along. At the end, after a quiet period without faults, the
campaign prints its figures and ``violations: N``, and exits 1 if N > 0. Every process is stopped at the end,
on Ctrl-C, and if this process dies (PDEATHSIG).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pools.keys import EIP_LABEL
from sandbox.ec2_emulator import REGION, Ec2Emulator, Ec2World
from sandbox.embedded_redis import EmbeddedRedis
from sandbox.faults import FaultProxy, FaultRates
from sandbox.kube_emulator import KubeEmulator, KubeFaultRates, KubeFaults
from sandbox.ports import wait_for_port
from sandbox.run import BASE_DIR, PYTHON, Child, Stop, Supervisor, _raise_stop, fresh_sqlite, prepare_database
from sandbox.signals import on_stop_signals
from sandbox.simulate import (
    CA_TAINT_KEY,
    SIMULATED_LABEL,
    WORKLOAD_NAMESPACE,
    KubeConflict,
    KubeHttp,
    Pace,
    SimNode,
    SimSpec,
    Simulation,
)

log = logging.getLogger("sandbox.chaos")
STOP_REQUESTED = threading.Event()
STATE_DIR = BASE_DIR / "var" / "chaos"
KARPENTER_TAINT_KEY = "karpenter.sh/disrupted"
UNREACHABLE = "node.kubernetes.io/unreachable"
# The campaign's launch specs: node labels, the pool's tag selector, the tags its EIPs carry, its size.
SPECS = {
    "web": ({"eipdash.io/nodegroup": "web"}, ("eipdash.io/pool", "web"), {"eipdash.io/pool": "web"}, 4),
    "batch": ({"eipdash.io/nodegroup": "batch"}, ("eipdash.io/batch-pool", None), {"eipdash.io/batch-pool": "b"}, 3),
    "api": ({"eipdash.io/nodegroup": "api"}, ("eipdash.io/pool", "api"), {"eipdash.io/pool": "api"}, 3),
}


@dataclass(frozen=True)
class Campaign:
    seed: int = 1
    # The faulty phase runs until every count below is reached, and at most max_seconds.
    faults: int = 1000
    kills: int = 20
    freezes: int = 20
    spot_interruptions: int = 10
    redis_restarts: int = 3
    max_seconds: float = 1500.0
    # After the campaign: faults off, no more kills or actors, the engine converges while the checker looks.
    quiet: float = 30.0
    kill_every: tuple[float, float] = (10.0, 20.0)
    # A freeze lasts longer than a lease (10 s); the next one starts a few seconds after it ends.
    freeze_seconds: tuple[float, float] = (12.0, 25.0)
    freeze_gap: tuple[float, float] = (2.0, 8.0)
    spot_every: tuple[float, float] = (15.0, 30.0)
    # How long a spot-interrupted node stays listed, NotReady, before it is deleted.
    spot_linger: tuple[float, float] = (30.0, 90.0)
    redis_every: tuple[float, float] = (40.0, 80.0)
    # The clock of the second worker, ahead of the others' (0: no skewed worker).
    skew_seconds: float = 30.0
    # An I4 finding counts once it lasts this long: one pass, even one delayed by a killed worker's lease.
    grace: float = 30.0
    sample_every: float = 0.5
    reconcile_seconds: int = 1
    # boto3 retries (4 attempts in all), so most EC2 faults cost a retry, not a failed call; the Kubernetes
    # client does not retry, so each of its faults fails a read or a step.
    ec2: FaultRates = FaultRates(throttle=0.18, internal=0.08, timeout=0.004, after=0.08, hold_seconds=11.0)
    kube: KubeFaultRates = KubeFaultRates(conflict=0.1, write_error=0.06, read_error=0.12, watch_drop=0.6,
                                          drop_after=(2.0, 20.0))
    # Per actor tick: a drain called off, a replacement.
    call_off: float = 0.08
    replace: float = 0.03


# `make test`'s campaign: a little of each fault, the defects they expose included (a freeze, a spot
# interruption, a skewed worker).
SHORT = Campaign(faults=50, kills=3, freezes=1, spot_interruptions=1, redis_restarts=1, max_seconds=120.0, quiet=20.0,
                 kill_every=(8.0, 12.0), freeze_seconds=(12.0, 14.0), spot_every=(6.0, 10.0),
                 spot_linger=(15.0, 20.0), redis_every=(12.0, 16.0))


# --- the cluster's actors ----------------------------------------------------------------------------


@dataclass
class PodLife:
    node: str
    instance_id: str
    created: float  # wall clock, once the pod existed
    deleted: float | None = None  # wall clock, when its deletion began


class LedgerKube(KubeHttp):
    """The actors' Kubernetes client, keeping the life of every workload pod for the I2 check."""

    def __init__(self, base_url: str, instance_of: dict[str, str]) -> None:
        super().__init__(base_url)
        self.instance_of = instance_of  # node name -> current instance id
        self.pods: dict[str, PodLife] = {}

    def create_running_pod(self, manifest: dict[str, Any]) -> None:
        super().create_running_pod(manifest)
        meta = manifest["metadata"]
        if meta["namespace"] == WORKLOAD_NAMESPACE:
            node = manifest["spec"]["nodeName"]
            self.pods[meta["name"]] = PodLife(node, self.instance_of.get(node, ""), time.time())

    def _gone(self, namespace: str, name: str) -> None:
        life = self.pods.get(name) if namespace == WORKLOAD_NAMESPACE else None
        if life is not None and life.deleted is None:
            life.deleted = time.time()

    def evict_pod(self, namespace: str, name: str) -> None:
        self._gone(namespace, name)
        super().evict_pod(namespace, name)

    def delete_pod(self, namespace: str, name: str) -> None:
        self._gone(namespace, name)
        super().delete_pod(namespace, name)


@dataclass
class ChaosCounters:
    drains: int = 0
    called_off: int = 0
    replacements: int = 0
    spot_interruptions: int = 0
    terminated_at: dict[str, float] = field(default_factory=dict)  # instance id -> wall clock


@dataclass
class Lingering:
    """A spot-interrupted node: its instance is gone, its Node object stays listed until `delete_at`."""

    node: SimNode
    delete_at: float  # the simulation's clock


class ChaosSimulation(Simulation):
    """The sandbox simulation (autoscaler, scheduler, drainer) plus drains called off and replacements."""

    def __init__(self, *, ec2: Ec2World, kube: LedgerKube, specs: list[SimSpec], seed: int, pace: Pace,
                 campaign: Campaign) -> None:
        super().__init__(ec2=ec2, kube=kube, specs=specs, seed=seed, pace=pace)
        self.ledger = kube
        self.campaign = campaign
        self.chaos = ChaosCounters()
        self.lingering: dict[str, Lingering] = {}
        self._rng = random.Random(seed * 7919 + 1)

    def step(self) -> None:
        super().step()
        try:
            self._chaos(self.clock())
            self._delete_lingering(self.clock())
        except Exception:
            self.counters.errors += 1

    def spot_interrupt(self, linger: float) -> str | None:
        """The instance of the oldest node holding an EIP (else the oldest node) is terminated at once, as a spot
        interruption does. AWS drops its EIP's association; its Node object stays listed, NotReady and tainted
        unreachable by the node controller, until `linger` seconds later, when the cloud controller deletes it.
        The oldest node: were it still counted as live, it would be first in line for the EIP it just lost."""
        listed = {n["metadata"]["name"]: n for n in self.kube.list_nodes(f"{SIMULATED_LABEL}=true")}
        candidates = sorted((n for n in self.nodes.values() if n.name in listed), key=lambda n: n.ordinal)
        holding = [n for n in candidates if EIP_LABEL in (listed[n.name]["metadata"].get("labels") or {})]
        if not candidates:
            return None
        victim = (holding or candidates)[0]
        self.ec2.terminate(victim.instance_id, drop_associations=True)
        self.chaos.terminated_at[victim.instance_id] = time.time()
        del self.nodes[victim.name]
        self.lingering[victim.name] = Lingering(victim, self.clock() + linger)
        self.ledger.merge_patch_node_status(victim.name, {"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
             "message": "Kubelet stopped posting node status."}]}})

        def unreachable(current: dict[str, Any]) -> dict[str, Any]:
            taints = [t for t in (current.get("spec") or {}).get("taints") or [] if t.get("key") != UNREACHABLE]
            return {"taints": [*taints, {"key": UNREACHABLE, "effect": "NoSchedule"},
                               {"key": UNREACHABLE, "effect": "NoExecute"}]}

        self._patch_node(victim.name, unreachable)
        self.chaos.spot_interruptions += 1
        log.info("spot interruption of %s (%s): listed NotReady for %.0fs", victim.name, victim.instance_id, linger)
        return victim.name

    def _delete_lingering(self, now: float) -> None:
        for name, lingering in list(self.lingering.items()):
            if now < lingering.delete_at:
                continue
            for pod_name in lingering.node.workload_pods:
                self.kube.delete_pod(WORKLOAD_NAMESPACE, pod_name)  # the pod GC
            for namespace, pod_name in lingering.node.daemon_pods:
                self.kube.delete_pod(namespace, pod_name)
            self.kube.delete_node(name)
            del self.lingering[name]
            self.counters.terminated += 1
            log.info("deleted the spot-interrupted node %s", name)

    def launch_node(self, spec_name: str, name: str | None = None) -> SimNode:
        """Launch as the simulation does, and remember which instance the name stands for now."""
        node = super().launch_node(spec_name, name=name)
        self.ledger.instance_of[node.name] = node.instance_id
        return node

    def _victim(self, active: list[SimNode], pick: float) -> SimNode:
        # Half the time any node, busy ones included: the drains that matter wait for workload pods.
        if self._rng.random() < 0.5:
            return active[min(int(pick * len(active)), len(active) - 1)]
        return super()._victim(active, pick)

    def drain(self, node: SimNode) -> None:
        """Three ways to start a drain: kubectl drain (cordon), the cluster autoscaler, Karpenter."""
        style = self._rng.choice(["cordon", "autoscaler", "karpenter"])
        taint = {"autoscaler": CA_TAINT_KEY, "karpenter": KARPENTER_TAINT_KEY}.get(style)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            taints = list((current.get("spec") or {}).get("taints") or [])
            spec: dict[str, Any] = {}
            if taint:
                taints.append({"key": taint, "value": str(int(time.time())), "effect": "NoSchedule"})
                spec["taints"] = taints
            if style != "karpenter":
                spec["unschedulable"] = True
            return spec

        self._patch_node(node.name, change)
        log.info("drain of %s started (%s)", node.name, style)
        node.draining_since = self.clock()
        node.last_eviction_at = node.draining_since
        node.drained_at = None
        self.counters.cordoned += 1
        self.chaos.drains += 1

    def _patch_node(self, name: str, change: Any) -> bool:
        """Read-modify-write with a resourceVersion precondition, retried on 409 (the engine writes too)."""
        for _attempt in range(8):
            current = self.kube.get_node(name)
            if current is None:
                return False
            patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                     "spec": change(current)}
            try:
                self.kube.merge_patch_node(name, patch)
                return True
            except KubeConflict:
                continue
        return False

    def _chaos(self, now: float) -> None:
        draining = [n for n in self.nodes.values() if n.draining_since is not None]
        if draining and self._rng.random() < self.campaign.call_off:
            self._call_off(self._rng.choice(sorted(draining, key=lambda n: n.ordinal)))
        active = sorted((n for n in self.nodes.values() if n.draining_since is None), key=lambda n: n.ordinal)
        if active and self._rng.random() < self.campaign.replace:
            self._replace(self._rng.choice(active))

    def _call_off(self, node: SimNode) -> None:
        """The scale-down is called off: the autoscaler or Karpenter takes its taint back, or an uncordon."""

        def change(current: dict[str, Any]) -> dict[str, Any]:
            taints = [t for t in (current.get("spec") or {}).get("taints") or []
                      if t.get("key") not in (CA_TAINT_KEY, KARPENTER_TAINT_KEY)]
            return {"taints": taints or None, "unschedulable": None}

        if self._patch_node(node.name, change):
            node.draining_since = None
            node.drained_at = None
            self.chaos.called_off += 1
            log.info("drain of %s called off", node.name)

    def _replace(self, node: SimNode) -> None:
        """A spot interruption: the instance goes without a drain, and its node name comes back on a new one."""
        # AWS drops the association on terminate, the emulator keeps it: both happen here.
        self.ec2.terminate(node.instance_id, drop_associations=self._rng.random() < 0.5)
        self.chaos.terminated_at[node.instance_id] = time.time()
        for pod_name in node.workload_pods:
            self.kube.delete_pod(WORKLOAD_NAMESPACE, pod_name)  # the pod GC
        for namespace, pod_name in node.daemon_pods:
            self.kube.delete_pod(namespace, pod_name)
        self.kube.delete_node(node.name)
        del self.nodes[node.name]
        self.counters.terminated += 1
        replacement = self.launch_node(node.spec, name=node.name)
        self.chaos.replacements += 1
        log.info("replaced %s: %s terminated, %s registered under the same name", node.name, node.instance_id,
                 replacement.instance_id)

    def _remove(self, node: SimNode) -> None:
        self.chaos.terminated_at[node.instance_id] = time.time()
        super()._remove(node)


# --- databases ---------------------------------------------------------------------------------------


def fresh_database(state_dir: Path, database_url: str | None) -> tuple[str, Any]:
    """A database for this campaign only: a new SQLite file, or a new database on the DATABASE_URL server
    (created here, dropped at the end), so the campaign never mixes with anyone's record."""
    if not database_url or database_url.startswith("sqlite"):
        path = state_dir / "eipdash.sqlite3"
        fresh_sqlite(path)
        return f"sqlite:///{path}", lambda: None
    import psycopg

    parts = urlsplit(database_url)
    name = f"eipdash_chaos_{os.getpid()}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


# --- the campaign ------------------------------------------------------------------------------------


@dataclass
class Findings:
    first_seen: dict[str, tuple[float, str]] = field(default_factory=dict)  # key -> (offset, line)
    last_seen: dict[str, float] = field(default_factory=dict)  # key -> offset
    samples: int = 0
    skipped: int = 0
    longest_wait: float = 0.0
    longest_wait_node: str = ""
    waiting_since: dict[tuple[str, str], float] = field(default_factory=dict)
    # allocation id -> (instance, ENI, when) of every pool EIP on a node at the last sample (I2 over time).
    held: dict[str, tuple[str, str, float]] = field(default_factory=dict)

    def add(self, offset: float, key: str, line: str) -> None:
        self.first_seen.setdefault(key, (offset, line))
        self.last_seen[key] = offset


class QuietRedis(EmbeddedRedis):
    """The embedded Redis with its output in the campaign's log rather than on the console."""

    def __init__(self, log: Any, port: int | None = None) -> None:
        super().__init__(port)
        self.log = log

    def start(self) -> QuietRedis:
        self.process = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for_port(self.port)
        return self


def seed_world(ec2: Ec2World) -> list[SimSpec]:
    """The launch specs in the record, their pools and two decoys in EC2."""
    from pools import services
    from pools.specfile import parse_launch_spec

    sims = []
    for name, (labels, (tag_key, tag_value), tags, size) in SPECS.items():
        selector = {"tagKey": tag_key, **({"tagValue": tag_value} if tag_value else {})}
        services.launch_spec_apply(data=parse_launch_spec({
            "name": name, "labels": [{"key": k, "value": v} for k, v in labels.items()],
            "elasticIpPool": {"tagSelector": selector}, "region": REGION}))
        for index in range(size):
            ec2.allocate_eip(dict(tags, Index=str(index)))
        sims.append(SimSpec(name=name, labels=dict(labels), pool_size=size))  # node_manifest adds SIMULATED_LABEL
    ec2.allocate_eip({})  # untagged: no pool's
    bastion_eip, _ = ec2.allocate_eip({"Name": "bastion"})
    _, eni, ip = ec2.launch_instance()
    ec2.client.associate_address(AllocationId=bastion_eip, NetworkInterfaceId=eni, PrivateIpAddress=ip)
    return sims


def i2_between_samples(findings: Findings, observation: Any, ledger: LedgerKube, terminated_at: dict[str, float],
                       started: float, now: float) -> list[tuple[str, str]]:
    """I2 over time, on the campaign's own clock only (never a worker's, which may run ahead): a pool EIP that
    was on an instance at the last sample and is not any more, while a workload pod the campaign ran there
    lived through both samples, unless that instance was terminated meanwhile (AWS drops the association)."""
    found = []
    for allocation_id, (instance_id, eni_id, seen_at) in findings.held.items():
        now_on = observation.associations.get(allocation_id)
        if now_on is not None and now_on[1] == eni_id:
            continue
        if instance_id in terminated_at and terminated_at[instance_id] <= now:
            continue
        busy = sorted(name for name, life in ledger.pods.items()
                      if life.instance_id == instance_id and life.created < seen_at
                      and (life.deleted is None or life.deleted > now))
        if busy:
            found.append((f"I2:{allocation_id}:{instance_id}",
                          f"I2 {allocation_id} left {instance_id} while workload pod(s) ran there: {', '.join(busy)}"))
    findings.held = {allocation_id: (observation.instance_of_eni[eni_id], eni_id, started)
                     for allocation_id, (_, eni_id) in observation.associations.items()
                     if eni_id in observation.instance_of_eni}
    return found


def faketime_env(library: str, seconds: float) -> dict[str, str]:
    return {"LD_PRELOAD": library, "FAKETIME": f"+{seconds:g}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def faketime_library() -> str | None:
    """A libfaketime that works here: the one the `libfaketime` wheel carries (a dev dependency, so that
    `make chaos` needs no system package), else Debian's (the `faketime` package). Each is tried first: Debian
    bookworm's 0.9.10 breaks time.sleep (EINVAL) when the monotonic clock is left alone."""
    candidates = []
    spec = importlib.util.find_spec("libfaketime")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1")
    candidates += [Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
                   Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1")]
    probe = "import datetime, time; time.sleep(0.01); print(datetime.datetime.now().timestamp())"
    for path in candidates:
        if not path.exists():
            continue
        try:
            ran = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **faketime_env(str(path), 30)},
                                 capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            continue
        if ran.returncode == 0 and abs(float(ran.stdout) - time.time() - 30) < 10:
            return str(path)
    return None


# A killed worker is started again at once, but takes this long to serve again (Celery's start, lease expiry).
RESTART_SECONDS = 15.0
# Celery's worker logs "<hostname> ready." once it consumes tasks.
CELERY_READY = re.compile(r"@\S+ ready\.$")


@dataclass
class Worker:
    """One Celery worker of the campaign, whether it is frozen (SIGSTOPped), and until when it cannot serve."""

    name: str
    skewed: bool
    child: Child
    frozen_until: float | None = None
    disturbed_until: float = 0.0


def serves(worker: Worker, now: float) -> bool:
    """Neither frozen nor restarting: a restarted worker serves once Celery says it is ready (on a loaded
    machine that takes longer than RESTART_SECONDS), and not before RESTART_SECONDS have passed."""
    return worker.frozen_until is None and worker.disturbed_until <= now and worker.child.ready.is_set()


def disturbable(workers: list[Worker], now: float) -> list[Worker]:
    """The workers that may be killed or frozen now: only while every other one serves. One worker is always
    able to run passes, as in any deployment with two; otherwise no pass could repair anything, and I4's
    grace (one pass) would be meaningless."""
    return [w for w in workers if w.frozen_until is None
            and all(serves(other, now) for other in workers if other is not w)]


@dataclass
class Schedule:
    """When the next fault of each kind comes, and how many of each have come (the campaign's clock)."""

    campaign: Campaign
    rng: random.Random
    start: float
    next_kill: float = 0.0
    next_freeze: float = 0.0
    next_spot: float = 0.0
    next_redis: float = 0.0
    kills: int = 0
    freezes: int = 0
    redis_restarts: int = 0

    def __post_init__(self) -> None:
        c = self.campaign
        self.next_kill = self.start + self.rng.uniform(*c.kill_every)
        self.next_freeze = self.start + self.rng.uniform(*c.freeze_gap)
        self.next_spot = self.start + self.rng.uniform(*c.spot_every)
        self.next_redis = self.start + self.rng.uniform(*c.redis_every)

    def done(self, *, faults: int, spots: int, redis_possible: bool) -> bool:
        c = self.campaign
        return (faults >= c.faults and self.kills >= c.kills and self.freezes >= c.freezes
                and spots >= c.spot_interruptions and (self.redis_restarts >= c.redis_restarts or not redis_possible))


def run(campaign: Campaign, *, state_dir: Path, redis_url: str | None, out: Any = sys.stdout) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    state_dir.mkdir(parents=True, exist_ok=True)
    log = (state_dir / "processes.log").open("w")
    supervisor = Supervisor(out=log)  # type: ignore[arg-type]  # a text file is what Supervisor writes to
    rng = random.Random(campaign.seed)
    started_wall = time.time()
    emulator = Ec2Emulator().start()
    proxy = FaultProxy(emulator.endpoint_url, seed=campaign.seed, rates=campaign.ec2).start()
    kube_faults = KubeFaults(campaign.kube, seed=campaign.seed + 1)
    kube = KubeEmulator(faults=kube_faults).start()
    side_door = kube.open_side_door()
    redis: QuietRedis | None = None
    drop_database: Any = lambda: None  # noqa: E731
    crashes: collections.Counter[str] = collections.Counter()
    findings = Findings()
    status = 1
    try:
        engine_kubeconfig = kube.write_kubeconfig(state_dir / "kubeconfig")
        checker_kubeconfig = state_dir / "kubeconfig-side-door"
        config = json.loads(engine_kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = side_door
        checker_kubeconfig.write_text(json.dumps(config))
        if redis_url is None:
            redis = QuietRedis(log).start()
            redis_url = redis.url
        database_url, drop_database = fresh_database(state_dir, os.environ.get("DATABASE_URL"))
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "EIPDASH_"))}
        env.update(emulator.env())
        env.update({
            "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "eipdash.settings", "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "KUBECONFIG": str(engine_kubeconfig),
            "EIPDASH_RECONCILE_SECONDS": str(campaign.reconcile_seconds),
        })
        prepare_database(env)  # migrates, and sets this process up with the same environment
        actors_log = logging.FileHandler(state_dir / "actors.log")
        actors_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        for name in ("sandbox.simulate", "sandbox.chaos"):
            logging.getLogger(name).handlers = [actors_log]
            logging.getLogger(name).propagate = False
        os.environ["AWS_ENDPOINT_URL_EC2"] = emulator.endpoint_url  # this process reads moto without faults
        child_env = dict(env, AWS_ENDPOINT_URL_EC2=proxy.url)  # the engine only through the fault proxy
        skew_env = dict(child_env)
        library = faketime_library() if campaign.skew_seconds else None
        if library is not None:
            skew_env.update(faketime_env(library, campaign.skew_seconds))
        elif campaign.skew_seconds:
            say("chaos: no libfaketime found (pip install libfaketime, or Debian's faketime): no skewed worker")

        world = Ec2World(emulator.endpoint_url, REGION)
        sims = seed_world(world)
        ledger = LedgerKube(side_door, {})
        pace = Pace(tick_seconds=0.5, scale_every_seconds=4.0, evict_every_seconds=2.0, drain_grace_seconds=3.0,
                    pods_per_node=2, overscale_every=3, max_launch_per_decision=2)
        simulation = ChaosSimulation(ec2=world, kube=ledger, specs=sims, seed=campaign.seed, pace=pace,
                                     campaign=campaign)
        for sim in sims:
            simulation.launch_node(sim.name)

        from workers.ec2 import Ec2, Ec2Error
        from workers.invariants import Checker, observe
        from workers.kube import Kube, KubeError

        checker_ec2 = Ec2(REGION)
        checker_kube = Kube(config_file=str(checker_kubeconfig))
        checker = Checker(grace_seconds=campaign.grace,
                          observe_fn=lambda: observe(ec2_for=lambda _r: checker_ec2, kube_for=lambda _c: checker_kube))

        def start_worker(name: str, skewed: bool) -> Child:
            return supervisor.start(name, [
                PYTHON, "-m", "celery", "-A", "eipdash", "worker", "--loglevel", "INFO", "--concurrency", "2",
                "--hostname", f"{name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
                skew_env if skewed else child_env, ready_when=CELERY_READY)

        def beat() -> Child:
            return supervisor.start("beat", [PYTHON, "-m", "celery", "-A", "eipdash", "beat", "--loglevel", "INFO",
                                             "--schedule", str(state_dir / "celerybeat-schedule")], child_env)

        def watch() -> Child:
            return supervisor.start("watch", [PYTHON, "manage.py", "watch_nodes"], child_env)

        workers = [Worker("worker", False, start_worker("worker", False))]
        if library is not None:
            workers.append(Worker("worker-skewed", True, start_worker("worker-skewed", True)))
        starters = {"beat": beat, "watch": watch}
        beat()
        watch()
        say(f"chaos: seed {campaign.seed}; faults until {campaign.faults} faults, {campaign.kills} kills, "
            f"{campaign.freezes} freezes, {campaign.spot_interruptions} spot interruptions and "
            f"{campaign.redis_restarts if redis is not None else 0} Redis restarts (at most "
            f"{campaign.max_seconds:.0f}s), then {campaign.quiet:.0f}s quiet; logs in {state_dir}")

        start = time.monotonic()
        schedule = Schedule(campaign, rng, start)
        cap = start + campaign.max_seconds
        end = float("inf")
        next_tick = next_sample = start
        quiet = False
        while time.monotonic() < end:
            if STOP_REQUESTED.is_set():
                # The actors catch every Exception (Stop included) to keep the cluster moving: check here too.
                raise Stop("SIGINT or SIGTERM")
            now = time.monotonic()
            restart_crashed(supervisor, workers, starters, start_worker, crashes, say, now - start, state_dir)
            thaw(workers, now)
            if not quiet and (now >= cap or schedule.done(faults=proxy.injected + kube_faults.injected,
                                                         spots=simulation.chaos.spot_interruptions,
                                                         redis_possible=redis is not None)):
                quiet = True
                end = now + campaign.quiet
                proxy.enabled = False
                kube_faults.enabled = False
                thaw(workers, float("inf"))
                say(f"chaos: faults off at {now - start:.0f}s; the engine converges")
            if not quiet:
                if now >= schedule.next_kill and kill_one(schedule, workers, rng, start_worker, now):
                    schedule.next_kill = now + rng.uniform(*campaign.kill_every)
                if now >= schedule.next_freeze and freeze_one(schedule, workers, rng, now):
                    frozen_for = max(w.frozen_until or now for w in workers) - now
                    schedule.next_freeze = now + frozen_for + rng.uniform(*campaign.freeze_gap)
                if now >= schedule.next_spot:
                    simulation.spot_interrupt(rng.uniform(*campaign.spot_linger))
                    schedule.next_spot = now + rng.uniform(*campaign.spot_every)
                if (redis is not None and now >= schedule.next_redis
                        and schedule.redis_restarts < campaign.redis_restarts):
                    redis = restart_redis(redis, log)
                    schedule.redis_restarts += 1
                    schedule.next_redis = now + rng.uniform(*campaign.redis_every)
                    say(f"chaos: redis restarted at {now - start:.0f}s")
                if now >= next_tick:
                    simulation.step()
                    next_tick = now + pace.tick_seconds
            elif simulation.lingering:
                simulation._delete_lingering(float("inf"))  # the cloud controller catches up
            if now >= next_sample:
                sample(checker, findings, now - start, (Ec2Error, KubeError), ledger, simulation.chaos.terminated_at)
                next_sample = time.monotonic() + campaign.sample_every
            time.sleep(0.05)
        sample(checker, findings, time.monotonic() - start, (Ec2Error, KubeError), ledger,
               simulation.chaos.terminated_at, final=True)

        status = report(say, state_dir, campaign, started_wall, proxy, kube_faults, schedule, simulation, findings,
                        crashes, skewed=sum(w.skewed for w in workers), seconds=time.monotonic() - start)
    except Stop as stop:
        say(f"chaos: {stop} received: stopping every process")
        status = 130
    except Exception as error:
        say(f"chaos: FAILED: {error!r}")
        status = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        if redis is not None:
            redis.stop()
        proxy.stop()
        kube.stop()
        emulator.stop()
        try:
            drop_database()
        except Exception as error:  # the figures are out already; say why the database stayed
            say(f"chaos: could not drop the campaign database: {error!r}")
        log.close()
    return status


def restart_crashed(supervisor: Supervisor, workers: list[Worker], starters: dict[str, Any], start_worker: Any,
                    crashes: collections.Counter[str], say: Any, offset: float, state_dir: Path) -> None:
    """As a Deployment would: a process that exited on its own is started again. Counted and printed."""
    for child in list(supervisor.children):
        if child.process.poll() is None or child.expected_exit:
            continue
        crashes[child.name] += 1
        say(f"chaos: {child.name} exited on its own ({child.process.returncode}) at {offset:.0f}s; started "
            f"again (see {state_dir / 'processes.log'})")
        supervisor.children.remove(child)
        worker = next((w for w in workers if w.child is child), None)
        if worker is not None:
            worker.child = start_worker(worker.name, worker.skewed)
            worker.frozen_until = None
            worker.disturbed_until = time.monotonic() + RESTART_SECONDS
        else:
            starters[child.name]()


def kill_one(schedule: Schedule, workers: list[Worker], rng: random.Random, start_worker: Any, now: float) -> bool:
    """SIGKILL one worker (its whole process group: the pool's children too), and start it again."""
    candidates = disturbable(workers, now)
    if not candidates:
        return False
    worker = rng.choice(candidates)
    os.killpg(worker.child.process.pid, signal.SIGKILL)
    worker.child.process.wait(timeout=10)
    worker.child.expected_exit = True
    worker.child = start_worker(worker.name, worker.skewed)
    worker.disturbed_until = now + RESTART_SECONDS
    schedule.kills += 1
    return True


def freeze_one(schedule: Schedule, workers: list[Worker], rng: random.Random, now: float) -> bool:
    """SIGSTOP one worker's whole process group for longer than a lease; `thaw` sends SIGCONT later, and it
    goes on exactly where it was, as after a GC pause, CPU starvation or a migrated VM."""
    candidates = disturbable(workers, now)
    if not candidates:
        return False
    worker = rng.choice(candidates)
    os.killpg(worker.child.process.pid, signal.SIGSTOP)
    worker.frozen_until = now + rng.uniform(*schedule.campaign.freeze_seconds)
    worker.disturbed_until = max(worker.disturbed_until, worker.frozen_until)
    schedule.freezes += 1
    log.info("froze %s until +%.0fs", worker.name, worker.frozen_until - schedule.start)
    return True


def thaw(workers: list[Worker], now: float) -> None:
    for worker in workers:
        if worker.frozen_until is not None and now >= worker.frozen_until:
            try:
                os.killpg(worker.child.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            worker.frozen_until = None


def restart_redis(redis: QuietRedis, log: Any) -> QuietRedis:
    """Redis goes away (and with it every lease, budget, reading and queued task), then comes back empty."""
    port = redis.port
    redis.stop()
    time.sleep(1.0)  # an outage, not a blip
    return QuietRedis(log, port).start()


def report(say: Any, state_dir: Path, campaign: Campaign, started_wall: float, proxy: FaultProxy,
           kube_faults: KubeFaults, schedule: Schedule, simulation: ChaosSimulation, findings: Findings,
           crashes: collections.Counter[str], *, skewed: int, seconds: float) -> int:
    """Print the figures (and write result.json); 1 when the checker found a violation."""
    injected = proxy.injected + kube_faults.injected
    violations = sorted((first, line, findings.last_seen[key]) for key, (first, line) in findings.first_seen.items())
    counters, chaos = simulation.counters, simulation.chaos
    result = {
        "seed": campaign.seed, "seconds": round(seconds, 1), "quiet": campaign.quiet,
        "date": datetime.fromtimestamp(started_wall, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(), "faults": injected,
        "ec2_faults": dict(proxy.counts), "ec2_requests": proxy.requests,
        "kube_faults": dict(kube_faults.counts), "kube_requests": kube_faults.requests,
        "worker_kills": schedule.kills, "freezes": schedule.freezes, "spot_interruptions": chaos.spot_interruptions,
        "skewed_workers": skewed, "redis_restarts": schedule.redis_restarts, "crashes": dict(crashes),
        "samples": findings.samples, "samples_skipped": findings.skipped,
        "longest_wait": round(findings.longest_wait, 1), "nodes_launched": counters.launched,
        "nodes_terminated": counters.terminated, "drains": chaos.drains, "drains_called_off": chaos.called_off,
        "replacements": chaos.replacements, "pods_scheduled": counters.pods_scheduled,
        "pods_evicted": counters.pods_evicted, "actor_errors": counters.errors,
        "violations": [{"first_seen": round(first, 1), "last_seen": round(last, 1), "line": line}
                       for first, line, last in violations],
    }
    (state_dir / "result.json").write_text(json.dumps(result, indent=2))
    say(f"faults injected: {injected} (EC2 {sum(proxy.counts.values())} of {proxy.requests} requests: "
        f"{_kinds(proxy.counts)}; Kubernetes {kube_faults.injected} of {kube_faults.requests} requests: "
        f"{_kinds(kube_faults.counts)})")
    say(f"worker kills: {schedule.kills}")
    say(f"freezes: {schedule.freezes}")
    say(f"spot interruptions: {chaos.spot_interruptions}")
    say(f"skewed workers: {skewed}")
    say(f"redis restarts: {schedule.redis_restarts}")
    say(f"processes that exited on their own (started again): {sum(crashes.values())}"
        + (f" ({_kinds(crashes)})" if crashes else ""))
    say(f"cluster: {counters.launched} nodes launched, {counters.terminated} terminated, {chaos.drains} drains "
        f"({chaos.called_off} called off), {chaos.replacements} replacements, {counters.pods_scheduled} "
        f"workload pods, {counters.pods_evicted} evicted")
    say(f"samples: {findings.samples} ({findings.skipped} could not read the world) in {seconds:.0f}s")
    say(f"longest wait for a free EIP: {findings.longest_wait:.1f}s"
        + (f" ({findings.longest_wait_node})" if findings.longest_wait_node else ""))
    say(f"violations: {len(violations)}")
    for first, line, last in violations:
        lasted = f"  (until {last:.1f}s)" if last > first else ""
        say(f"  at {first:6.1f}s  {line}{lasted}")
    for line in history_of(line for _first, line, _last in violations):
        say(line)
    return 1 if violations else 0


def history_of(lines: Any, limit: int = 20) -> list[str]:
    """The recorded events of the EIPs and nodes a violation names, so that a failed run (in CI too, where
    the state directory is gone) says what the engine did. Timestamps are the writing worker's clock."""
    from django.db.models import Q

    from pools.models import Event

    text = " ".join(lines)
    ips = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    names = set(re.findall(r"\bi-[0-9a-f]+\.ec2\.internal\b", text))
    if not ips and not names:
        return []
    events = list(Event.objects.filter(Q(public_ip__in=ips) | Q(node__in=names)).order_by("-id")[:limit])
    return ["history of what they name (newest last):"] + [
        f"  {e.timestamp:%H:%M:%S.%f} {e.kind:<14} {e.launch_spec} {e.public_ip or '-'} {e.node or '-'} "
        f"{e.instance_id or '-'}: {e.reason}" for e in reversed(events)]


def _kinds(counts: collections.Counter[str]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


def sample(checker: Any, findings: Findings, offset: float, errors: tuple[type[Exception], ...],
           ledger: LedgerKube, terminated_at: dict[str, float], *, final: bool = False) -> None:
    """One observation of the checker, its findings added; final: the last one, after the quiet time
    (Checker.settle: what two successful passes did not set right counts, however short)."""
    from django.db import DatabaseError

    catch: tuple[type[Exception], ...] = (*errors, DatabaseError)
    started = time.time()  # the campaign's clock, which the pods' ledger keeps too
    try:
        confirmed = checker.settle() if final else checker.sample()
    except catch:
        findings.skipped += 1
        return
    findings.samples += 1
    for violation in confirmed:
        findings.add(offset, violation.key, violation.line())
    observation = checker.last
    for finding, line in i2_between_samples(findings, observation, ledger, terminated_at, started, time.time()):
        findings.add(offset, finding, line)
    # The longest a node waited while its pool had a free EIP (consecutive samples).
    now = time.monotonic()
    waiting_now = set()
    for spec, nodes in observation.waiting.items():
        if not observation.free.get(spec):
            continue
        for node in nodes:
            key = (spec, node)
            waiting_now.add(key)
            since = findings.waiting_since.setdefault(key, now)
            if now - since > findings.longest_wait:
                findings.longest_wait, findings.longest_wait_node = now - since, f"{node} of {spec}"
    findings.waiting_since = {k: v for k, v in findings.waiting_since.items() if k in waiting_now}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A seeded fault campaign against eipdash (make chaos).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="the short campaign of `make test`")
    full = Campaign()
    for flag, what in (("faults", "faults injected"), ("kills", "worker kills"), ("freezes", "worker freezes"),
                       ("spots", "spot interruptions"), ("redis-restarts", "Redis restarts")):
        parser.add_argument(f"--{flag}", type=int, help=f"at least this many {what} (default "
                                                         f"{getattr(full, _FIELDS[flag])}; --short: "
                                                         f"{getattr(SHORT, _FIELDS[flag])})")
    parser.add_argument("--duration", type=float, help="at most this many seconds of faults, whatever the counts "
                                                       f"(default {full.max_seconds:.0f}; --short: "
                                                       f"{SHORT.max_seconds:.0f})")
    parser.add_argument("--quiet", type=float, help="seconds without faults at the end (default 30; --short: 20)")
    parser.add_argument("--grace", type=float, help="seconds an I4 finding may last (default 30)")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="logs, kubeconfigs, result.json")
    parser.add_argument("--redis-url", help="use this Redis instead of an embedded one (then not restarted)")
    args = parser.parse_args(argv)
    base = SHORT if args.short else full
    asked = {_FIELDS[flag]: getattr(args, flag.replace("-", "_")) for flag in _FIELDS}
    campaign = replace(base, seed=args.seed, **{k: v for k, v in asked.items() if v is not None},
                       **{k: v for k, v in (("max_seconds", args.duration), ("quiet", args.quiet),
                                            ("grace", args.grace)) if v is not None})

    def stop(signum: int, frame: Any) -> None:
        STOP_REQUESTED.set()
        _raise_stop(signum, frame)

    on_stop_signals(stop)
    return run(campaign, state_dir=args.state_dir.resolve(), redis_url=args.redis_url)


# The count flags and the Campaign fields they set.
_FIELDS = {"faults": "faults", "kills": "kills", "freezes": "freezes", "spots": "spot_interruptions",
           "redis-restarts": "redis_restarts"}


if __name__ == "__main__":
    raise SystemExit(main())
