"""The engine at EC2's rate limit: bursts, the deployment shape, nodes one by one, and steady passes (issue 10).

Every scenario drives the real engine against the emulators, each in its own process (so that their work
does not share the engine's GIL): the EC2 emulator (moto) behind ``sandbox.aws_limits`` with 80 ms per call
and EC2's request token buckets (``RequestLimitExceeded`` when one is empty), the Kubernetes API emulator,
an embedded Redis (the spec leases and the EC2 budget live there, as in production) and a fresh SQLite file.
The world (instances, EIPs) is built on moto directly, so that building it spends none of the buckets; the
nodes are registered with the startup taint, as a kubelet started with ``--register-with-taints`` does.

Scenarios (``python -m bench.engine SCENARIO [--nodes N] ...``; prints one JSON object, its last line):

- ``burst``: N tainted nodes arrive at once, a pool of N EIPs; passes of ``workers.executor.reconcile_spec``
  run back to back in this process (with the Redis lease, like a worker) until every node holds its EIP and
  is untainted. Time to EIP is counted from the moment the burst is complete (the first pass starts then)
  to the node's ``eip_ready_at``; the total is the last one.
- ``deploy``: the same burst through the deployment shape: a Celery worker (``-c 4``), beat and
  ``manage.py watch_nodes``, as separate processes; time to EIP from each node's creation.
- ``scaleout``: a burst of N nodes (default 1000) spread evenly over S (``--specs``, default 10) specs of one
  region, each spec with its own pool of N/S EIPs and its own node labels, through two Celery workers (``-c 4``
  each, their own hostnames), beat and ``manage.py watch_nodes``; measured as ``deploy``, plus whether every
  node was served exactly once (AWS, Kubernetes and the database's Assignment rows) and each worker's passes.
- ``single``: the deployment shape, N nodes arriving one every ``--every`` seconds.
- ``steady``: N nodes that hold their EIPs (assigned first without the limits); CPU
  (``time.process_time``) and wall time of a pass with nothing to do, median of 5.
- ``reads``: S (``--specs``) specs in one region, 10 nodes each, everything assigned; the EC2 reads the proxy counts
  over one beat tick: ``reconcile_all`` with the Celery tasks run in this process, so the tick's passes.

Each run checks what it measured: every node of the burst holds exactly one pool EIP, no EIP is on two
nodes, no node is left tainted (AWS and Kubernetes as the emulators hold them).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGION = "us-east-1"
LATENCY_MS = 80
POOL_TAG = "pool"
STEADY_PASSES = 5


def bound_s(n: int) -> float:
    """bound(N) = max(0, N - 50) / 5 seconds, floored at 1 s: no sooner can N associations pass EC2's bucket."""
    return max(1.0, max(0, n - 50) / 5)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class Stack:
    """The emulators, Redis and a fresh database for one scenario process; Django set up against them."""

    def __init__(self, *, latency_ms: float = LATENCY_MS, throttle: bool = True) -> None:
        from sandbox.ports import free_port

        self.workdir = Path(tempfile.mkdtemp(prefix="eipdash-bench-engine-"))
        self.moto_port, self.proxy_port, self.kube_port = free_port(), free_port(), free_port()
        self.latency_ms, self.throttle = latency_ms, throttle
        self.kubeconfig = self.workdir / "kubeconfig"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.children: list[subprocess.Popen[bytes]] = []  # workers, beat, watch
        self.workers: list[str] = []  # the Celery workers' names (their logs: {name}.log)
        self.redis: Any = None
        self.env: dict[str, str] = {}

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def _server(self, *args: str) -> None:
        log = (self.workdir / f"{args[1].split('.')[-1]}.log").open("ab")
        self.processes.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=log))

    def start(self) -> Stack:
        from sandbox.embedded_redis import EmbeddedRedis
        from sandbox.ports import wait_for_port

        self._server("-m", "sandbox.ec2_emulator", "--port", str(self.moto_port))
        limits = ["--latency-ms", str(self.latency_ms)] + (["--throttle"] if self.throttle else [])
        self._server("-m", "sandbox.aws_limits", "--upstream", self.moto_url, "--port", str(self.proxy_port), *limits)
        self._server("-m", "sandbox.kube_emulator", "--port", str(self.kube_port), "--kubeconfig",
                     str(self.kubeconfig))
        self.redis = EmbeddedRedis().start()
        for port in (self.moto_port, self.proxy_port, self.kube_port):
            wait_for_port(port, 60)
        deadline = time.monotonic() + 60
        while not self.kubeconfig.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the Kubernetes emulator wrote no kubeconfig")
            time.sleep(0.05)
        metrics_dir = self.workdir / "prometheus"
        metrics_dir.mkdir()
        self.env = {
            # Production settings, as the workers run: DEBUG on keeps and formats every SQL statement of a pass.
            "DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "false", "PYTHONUNBUFFERED": "1",
            "DJANGO_SECRET_KEY": "bench-engine-" + "0123456789abcdef" * 4,
            "DATABASE_URL": f"sqlite:///{self.workdir / 'bench.sqlite3'}", "REDIS_URL": self.redis.url,
            "AWS_ENDPOINT_URL_EC2": self.proxy_url, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "KUBECONFIG": str(self.kubeconfig),
            "EIPDASH_LOG_LEVEL": "WARNING", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
            os.environ.pop(name, None)
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from sandbox.ec2_emulator import Ec2World
        from sandbox.simulate import KubeHttp

        self.world = Ec2World(self.moto_url)
        self.kube = KubeHttp(f"http://127.0.0.1:{self.kube_port}")
        return self

    def stop(self) -> None:
        # The clients first (a worker finishing its pass), then the servers they talk to.
        for group in (self.children, self.processes):
            for child in group:
                if child.poll() is None:
                    child.terminate()
            for child in group:
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(timeout=5)
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the world -------------------------------------------------------------------------------------

    def spec(self, name: str) -> Any:
        from pools import services
        from pools.specfile import parse_launch_spec

        spec, _ = services.launch_spec_apply(data=parse_launch_spec({
            "name": name, "labels": [{"key": POOL_TAG, "value": name}],
            "elasticIpPool": {"tagSelector": {"tagKey": POOL_TAG, "tagValue": name}}}))
        return spec

    def eips(self, spec_name: str, count: int) -> None:
        for _ in range(count):
            self.world.allocate_eip({POOL_TAG: spec_name})

    def instances(self, count: int) -> list[tuple[str, str, str]]:
        """``count`` running instances, 100 per RunInstances, over the three AZs: (id, az, private ip)."""
        subnets = self.world.ensure_network()
        zones = sorted(subnets)
        launched: list[tuple[str, str, str]] = []
        while len(launched) < count:
            az = zones[(len(launched) // 100) % len(zones)]
            batch = min(100, count - len(launched))
            instances = self.world.client.run_instances(
                ImageId="ami-12345678", InstanceType="m5.large", MinCount=batch, MaxCount=batch,
                SubnetId=subnets[az])["Instances"]
            launched.extend((i["InstanceId"], az, i["PrivateIpAddress"]) for i in instances)
        return launched

    def register(self, spec_name: str, names_and_instances: list[tuple[str, tuple[str, str, str]]],
                 threads: int = 8) -> dict[str, datetime]:
        """Register nodes of one spec with the startup taint (``threads`` at a time); {name: when its POST returned}."""
        return self.register_nodes([(name, instance, spec_name) for name, instance in names_and_instances], threads)

    def register_nodes(self, nodes: list[tuple[str, tuple[str, str, str], str]],
                       threads: int = 8) -> dict[str, datetime]:
        """Register (name, instance, spec name) nodes in that order with the startup taint, each labelled for its
        spec (``threads`` at a time); {name: when its POST returned}."""
        from sandbox.simulate import KubeHttp, node_manifest

        created: dict[str, datetime] = {}
        base = f"http://127.0.0.1:{self.kube_port}"
        clients = [KubeHttp(base) for _ in range(threads)]

        def one(index: int) -> None:
            name, (instance_id, az, ip), spec_name = nodes[index]
            clients[index % threads].create_node(node_manifest(
                name=name, instance_id=instance_id, az=az, private_ip=ip, region=REGION,
                labels={POOL_TAG: spec_name}))
            created[name] = datetime.now(UTC)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(len(nodes))))
        return created

    # --- the proxy's counters ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        from sandbox.aws_limits import read_stats

        return read_stats(self.proxy_url)

    def reset_stats(self) -> None:
        from sandbox.aws_limits import reset_stats

        reset_stats(self.proxy_url)

    # --- the deployment shape ---------------------------------------------------------------------------

    def start_deployment(self, concurrency: int = 4, workers: int = 1) -> None:
        """Celery workers (``-c concurrency`` each, hostname ``bench-PID-NAME@host``), beat and the node watch, in
        their own processes, as the Procfile runs them. One worker is named ``worker``; several ``worker-1``, ..."""
        env = {**os.environ, **self.env}
        py = sys.executable
        self.workers = ["worker"] if workers == 1 else [f"worker-{i}" for i in range(1, workers + 1)]
        commands = {
            name: [py, "-m", "celery", "-A", "eipdash", "worker", "--loglevel", "WARNING", "--concurrency",
                   str(concurrency), "--hostname", f"{self.worker_prefix}{name}@%h", "--without-gossip",
                   "--without-mingle"]
            for name in self.workers
        }
        commands["beat"] = [py, "-m", "celery", "-A", "eipdash", "beat", "--loglevel", "WARNING", "--schedule",
                            str(self.workdir / "celerybeat-schedule")]
        commands["watch"] = [py, "manage.py", "watch_nodes"]
        for name, argv in commands.items():
            log = (self.workdir / f"{name}.log").open("ab")
            self.children.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    @property
    def worker_prefix(self) -> str:
        return f"bench-{os.getpid()}-"

    def workers_answering(self) -> set[str]:
        """The names of the workers that answer a Celery ping (each consumes from the broker)."""
        from eipdash.celery import app

        replies = app.control.ping(timeout=1.0, limit=len(self.workers)) or []
        return {node.split("@")[0].removeprefix(self.worker_prefix) for reply in replies for node in reply}

    def worker_counts(self) -> dict[str, dict[str, int]]:
        """Per worker, so far: ``tasks``, the reconcile_spec tasks it ran (Celery's ``inspect stats``), and
        ``passes``, those that were not skipped (the pass count of eipdash_reconcile_duration_seconds in the
        Prometheus files of its pool processes; a pass skipped because its spec is busy is not counted there)."""
        from prometheus_client.multiprocess import MultiProcessCollector

        from eipdash.celery import app

        counts: dict[str, dict[str, int]] = {}
        for node, stats in (app.control.inspect(timeout=5.0).stats() or {}).items():
            files = [self.workdir / "prometheus" / f"histogram_{pid}.db" for pid in stats["pool"]["processes"]]
            passes = sum(sample.value for metric in MultiProcessCollector.merge([str(f) for f in files if f.exists()])
                         for sample in metric.samples if sample.name == "eipdash_reconcile_duration_seconds_count")
            counts[node.split("@")[0].removeprefix(self.worker_prefix)] = {
                "tasks": stats["total"].get("workers.tasks.reconcile_spec", 0), "passes": int(passes)}
        return counts

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def workers_log_count(self, text: str) -> int:
        """How many times ``text`` appears in the workers' logs (e.g. TimeLimitExceeded)."""
        return sum(self.log_tail(name, 1_000_000).count(text) for name in self.workers)


@contextmanager
def stack(**kwargs: Any) -> Iterator[Stack]:
    s = Stack(**kwargs)
    try:
        yield s.start()
    finally:
        s.stop()


def _ready_rows(specs: tuple[Any, ...]) -> Any:
    from pools.models import Node

    return Node.objects.filter(launch_spec__in=specs, deleted_at__isnull=True, eip_ready_at__isnull=False)


def ready_times(*specs: Any) -> dict[str, datetime]:
    """{node name: eip_ready_at} of the live nodes of these specs that have their EIP."""
    return {name: at for name, at in _ready_rows(specs).values_list("name", "eip_ready_at") if at is not None}


def ready_count(*specs: Any) -> int:
    """How many live nodes of these specs have their EIP (one COUNT: cheap enough to poll during a burst)."""
    return int(_ready_rows(specs).count())


def world_faults(s: Stack, names: list[str]) -> list[str]:
    """What breaks I1 and I3 as the emulators hold them: a node still tainted, without an EIP in AWS, with an EIP
    of another pool than its spec's (the EIP's pool tag against the node's label), or with two EIPs."""
    from pools.keys import STARTUP_TAINT_KEY

    faults: list[str] = []
    nodes = {n["metadata"]["name"]: n for n in s.kube.list_nodes()}
    tainted = [name for name in names
               if any(t.get("key") == STARTUP_TAINT_KEY for t in nodes[name]["spec"].get("taints") or [])]
    if tainted:
        faults.append(f"{len(tainted)} nodes still tainted, e.g. {tainted[:3]}")
    associated = [a for a in s.world.client.describe_addresses()["Addresses"] if a.get("AssociationId")]
    enis = [a["NetworkInterfaceId"] for a in associated]
    if len(enis) != len(set(enis)):
        faults.append("a node holds two pool EIPs")
    held = {a["PrivateIpAddress"]: {t["Key"]: t["Value"] for t in a.get("Tags") or []} for a in associated}
    wanted = {name: nodes[name]["status"]["addresses"][0]["address"] for name in names}
    bare = [name for name, ip in wanted.items() if ip not in held]
    if bare:
        faults.append(f"{len(bare)} nodes without an EIP in AWS, e.g. {bare[:3]}")
    foreign = [name for name, ip in wanted.items()
               if ip in held and held[ip].get(POOL_TAG) != nodes[name]["metadata"]["labels"].get(POOL_TAG)]
    if foreign:
        faults.append(f"{len(foreign)} nodes hold an EIP of another pool, e.g. {foreign[:3]}")
    return faults


def check_world(s: Stack, names: list[str]) -> None:
    """I1 and I3 as the emulators hold them: each node untainted with exactly one EIP of its pool, no EIP on two
    nodes."""
    faults = world_faults(s, names)
    assert not faults, "; ".join(faults)


def history_faults(names: list[str]) -> list[str]:
    """What the database's history says against "each node served once": a node with no Assignment row or
    with more than one (assigned twice, or a claim closed and opened again), or whose one row is not open and
    confirmed."""
    from django.db.models import Count, Q

    from pools.models import Assignment

    held = Q(closed_at__isnull=True, confirmed_at__isnull=False)
    per_node = (Assignment.objects.filter(node__name__in=names).values("node__name")
                .annotate(count=Count("id"), held=Count("id", filter=held)))
    rows = {name: (count, open_) for name, count, open_ in per_node.values_list("node__name", "count", "held")}
    faults: list[str] = []
    unserved = [name for name in names if name not in rows]
    twice = [name for name, (count, _) in rows.items() if count > 1]
    unheld = [name for name, (count, open_) in rows.items() if count == 1 and open_ != 1]
    for nodes, what in ((unserved, "no assignment"), (twice, "more than one assignment"),
                        (unheld, "an assignment not open and confirmed")):
        if nodes:
            faults.append(f"{len(nodes)} nodes with {what} in the history, e.g. {sorted(nodes)[:3]}")
    if twice:  # why: how the extra rows were closed
        closed = Assignment.objects.filter(node__name__in=twice, closed_at__isnull=False).order_by("opened_at")
        kinds = Counter(closed.values_list("close_kind", flat=True))
        faults.append(f"their closed rows by close_kind {dict(kinds)}, e.g. "
                      f"{list(closed.values_list('close_reason', flat=True)[:3])}")
    return faults


def wait_until(condition: Any, timeout: float, what: str, s: Stack | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "" if s is None else "\n".join(f"--- {n}\n{s.log_tail(n)}" for n in (*s.workers, "watch", "beat"))
            raise TimeoutError(f"{what}: not within {timeout:.0f}s\n{tails}")
        time.sleep(0.1)


# --- scenarios ---------------------------------------------------------------------------------------------


def burst(n: int) -> dict[str, Any]:
    with stack() as s:
        from workers import executor

        spec = s.spec("burst")
        s.eips("burst", n)
        names = [f"burst-{i:05d}.ec2.internal" for i in range(n)]
        instances = s.instances(n)
        # A worker builds its clients once: a first pass (no nodes yet) warms them up.
        executor.reconcile_spec(spec.pk)
        s.register("burst", list(zip(names, instances, strict=True)))
        s.reset_stats()
        t0, start = datetime.now(UTC), time.monotonic()
        passes, errors, skipped = 0, [], 0
        deadline = start + 3 * bound_s(n) + 300
        while len(ready_times(spec)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"burst of {n}: {len(ready_times(spec))} ready after {passes} passes")
            report = executor.reconcile_spec(spec.pk)
            passes += 1
            errors += report.errors
            skipped += bool(report.skipped)
        wall = time.monotonic() - start
        stats = s.stats()
        check_world(s, names)
        tte = [(at - t0).total_seconds() for at in ready_times(spec).values()]
        total = max(tte)
        return {
            f"burst_{n}_over_bound": round(total / bound_s(n), 3),
            f"burst_{n}_total_s": round(total, 2), f"burst_{n}_bound_s": bound_s(n),
            f"burst_{n}_tte_p50_s": round(percentile(tte, 50), 2),
            f"burst_{n}_tte_p99_s": round(percentile(tte, 99), 2),
            f"burst_{n}_throttled_calls": stats["throttled_calls"],
            f"burst_{n}_max_in_flight": stats["max_in_flight"],
            f"burst_{n}_passes": passes, f"burst_{n}_pass_errors": len(errors),
            f"burst_{n}_pass_error_lines": errors[:5],
            f"burst_{n}_calls": stats["calls"], f"burst_{n}_loop_wall_s": round(wall, 2),
        }


def _deployment_ready(s: Stack, spec: Any, instance: tuple[str, str, str]) -> None:
    """Every worker answering a ping, then a canary node through the running workers, beat and watch: the burst
    starts on a warm deployment."""
    wait_until(lambda: s.workers_answering() >= set(s.workers), 180, "a worker did not answer a ping", s)
    s.register(spec.name, [("canary.ec2.internal", instance)])
    wait_until(lambda: "canary.ec2.internal" in ready_times(spec), 180, "the canary node got no EIP", s)


def deploy(n: int) -> dict[str, Any]:
    with stack() as s:
        spec = s.spec("deploy")
        s.eips("deploy", n + 1)
        names = [f"deploy-{i:05d}.ec2.internal" for i in range(n)]
        canary, *instances = s.instances(n + 1)
        s.start_deployment(concurrency=4)
        _deployment_ready(s, spec, canary)
        s.reset_stats()
        created = s.register("deploy", list(zip(names, instances, strict=True)))
        first = min(created.values())
        wait_until(lambda: len(ready_times(spec)) >= n + 1, 3 * bound_s(n) + 300, f"deploy burst of {n}", s)
        stats = s.stats()
        check_world(s, names)
        ready = ready_times(spec)
        tte = [(ready[name] - created[name]).total_seconds() for name in names]
        total = max((ready[name] - first).total_seconds() for name in names)
        hard_limit = s.workers_log_count("TimeLimitExceeded")
        return {
            f"deploy_burst_{n}_over_bound": round(total / bound_s(n), 3), f"deploy_burst_{n}_total_s": round(total, 2),
            f"deploy_burst_{n}_tte_p50_s": round(percentile(tte, 50), 2),
            f"deploy_burst_{n}_tte_p99_s": round(percentile(tte, 99), 2),
            f"deploy_burst_{n}_throttled_calls": stats["throttled_calls"],
            f"deploy_burst_{n}_max_in_flight": stats["max_in_flight"],
            f"deploy_burst_{n}_hard_time_limits": hard_limit,
        }


def scaleout(n: int, spec_count: int) -> dict[str, Any]:
    """A burst of N nodes over S specs of one region (node i is spec i mod S's), each spec with its own pool
    of N/S EIPs and its own node labels, through two Celery workers (``-c 4`` each), beat and the watch."""
    with stack() as s:
        specs = [s.spec(f"scaleout-{i:02d}") for i in range(spec_count)]
        names = [f"scaleout-{i:05d}.ec2.internal" for i in range(n)]
        homes = [specs[i % spec_count].name for i in range(n)]
        for index, spec in enumerate(specs):
            s.eips(spec.name, homes.count(spec.name) + (index == 0))  # the first spec's pool serves the canary too
        canary, *instances = s.instances(n + 1)
        s.start_deployment(concurrency=4, workers=2)
        _deployment_ready(s, specs[0], canary)
        before = s.worker_counts()
        s.reset_stats()
        created = s.register_nodes(list(zip(names, instances, homes, strict=True)))
        first = min(created.values())
        wait_until(lambda: ready_count(*specs) >= n + 1, 3 * bound_s(n) + 300, f"scaleout burst of {n}", s)
        stats = s.stats()
        after = s.worker_counts()
        faults = world_faults(s, names) + history_faults(names)
        ready = ready_times(*specs)
        tte = [(ready[name] - created[name]).total_seconds() for name in names]
        total = max((ready[name] - first).total_seconds() for name in names)
        by_worker = {name: {count: after.get(name, {}).get(count, 0) - before.get(name, {}).get(count, 0)
                            for count in ("tasks", "passes")} for name in s.workers}
        key = f"scaleout_burst_{n}"
        return {
            f"{key}_over_bound": round(total / bound_s(n), 3), f"{key}_total_s": round(total, 2),
            f"{key}_bound_s": bound_s(n), f"{key}_specs": spec_count,
            f"{key}_tte_p50_s": round(percentile(tte, 50), 2), f"{key}_tte_p99_s": round(percentile(tte, 99), 2),
            f"{key}_throttled_calls": stats["throttled_calls"], f"{key}_max_in_flight": stats["max_in_flight"],
            f"{key}_served_once": not faults, f"{key}_faults": faults,
            f"{key}_passes_by_worker": {name: counts["passes"] for name, counts in by_worker.items()},
            f"{key}_tasks_by_worker": {name: counts["tasks"] for name, counts in by_worker.items()},
            f"{key}_hard_time_limits": s.workers_log_count("TimeLimitExceeded"),
        }


def single(n: int, every: float) -> dict[str, Any]:
    with stack() as s:
        spec = s.spec("single")
        s.eips("single", n + 1)
        canary, *instances = s.instances(n + 1)
        s.start_deployment(concurrency=4)
        _deployment_ready(s, spec, canary)
        s.reset_stats()
        created: dict[str, datetime] = {}
        names = [f"single-{i:04d}.ec2.internal" for i in range(n)]
        for name, instance in zip(names, instances, strict=True):
            started = time.monotonic()
            created.update(s.register("single", [(name, instance)], threads=1))
            time.sleep(max(0.0, every - (time.monotonic() - started)))
        wait_until(lambda: len(ready_times(spec)) >= n + 1, 120, f"{n} single nodes", s)
        stats = s.stats()
        check_world(s, names)
        ready = ready_times(spec)
        tte = [(ready[name] - created[name]).total_seconds() for name in names]
        return {"tte_single_p50_s": round(percentile(tte, 50), 2), "tte_single_p99_s": round(percentile(tte, 99), 2),
                "tte_single_max_s": round(max(tte), 2), "tte_single_throttled_calls": stats["throttled_calls"]}


@contextmanager
def unlimited_setup(s: Stack) -> Iterator[None]:
    """Build the steady state fast: the engine talks to moto directly, with a budget that never waits."""
    from django.conf import settings

    saved = {key: getattr(settings, key) for key in ("EIPDASH_EC2_MUTATE_BURST", "EIPDASH_EC2_MUTATE_RATE",
                                                     "EIPDASH_EC2_READ_BURST", "EIPDASH_EC2_READ_RATE")}
    for key in saved:
        setattr(settings, key, 1_000_000)
    os.environ["AWS_ENDPOINT_URL_EC2"] = s.moto_url  # the adapter's clients are keyed on it
    try:
        yield
    finally:
        os.environ["AWS_ENDPOINT_URL_EC2"] = s.proxy_url
        for key, value in saved.items():
            setattr(settings, key, value)
        from workers import budget

        budget.reset()


def _assign_all(spec: Any, n: int) -> None:
    from workers import executor

    deadline = time.monotonic() + 1800
    while len(ready_times(spec)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"steady setup: {len(ready_times(spec))} of {n} ready")
        executor.reconcile_spec(spec.pk)


def steady(n: int) -> dict[str, Any]:
    with stack() as s:
        from workers import executor

        spec = s.spec("steady")
        s.eips("steady", n)
        names = [f"steady-{i:05d}.ec2.internal" for i in range(n)]
        s.register("steady", list(zip(names, s.instances(n), strict=True)))
        setup_start = time.monotonic()
        with unlimited_setup(s):
            _assign_all(spec, n)
        setup_s = time.monotonic() - setup_start
        executor.reconcile_spec(spec.pk)  # the first pass through the proxy: a worker's warm clients
        s.reset_stats()
        cpu, wall = [], []
        # BENCH_PROFILE=FILE: a cProfile of the measured passes (pstats format), to see where their CPU goes.
        profiler = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
        for _ in range(STEADY_PASSES):
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            report = executor.reconcile_spec(spec.pk)
            if profiler is not None:
                profiler.disable()
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start_wall)
            assert not report.errors and not report.done, (report.errors[:3], report.done[:3])
        if profiler is not None:
            profiler.dump_stats(os.environ["BENCH_PROFILE"])
        stats = s.stats()
        return {f"steady_cpu_s_{n}": round(statistics.median(cpu), 3),
                f"steady_wall_s_{n}": round(statistics.median(wall), 3),
                f"steady_{n}_reads_per_pass": round(stats["reads"] / STEADY_PASSES, 1),
                f"steady_{n}_setup_s": round(setup_s, 1)}


def reads(count: int, nodes_per_spec: int = 10) -> dict[str, Any]:
    from sandbox.aws_limits import is_mutating

    with stack() as s:
        import redis

        from eipdash.celery import app
        from pools import redis_keys
        from workers import executor, tasks

        specs = [s.spec(f"reads-{i:02d}") for i in range(count)]
        instances = iter(s.instances(count * nodes_per_spec))
        for spec in specs:
            s.eips(spec.name, nodes_per_spec)
            s.register(spec.name, [(f"{spec.name}-{j:03d}.ec2.internal", next(instances))
                                   for j in range(nodes_per_spec)])
        with unlimited_setup(s):
            for spec in specs:
                _assign_all(spec, nodes_per_spec)
        for spec in specs:
            executor.reconcile_spec(spec.pk)  # warm clients through the proxy
        app.conf.task_always_eager = True  # the tick's passes run here, one after another
        try:
            tasks.reconcile_all()  # the tick before: what a pass keeps from the previous one
            s.reset_stats()
            # The next tick, as the beat sends it a reconcile interval later: the gate that drops a tick queued
            # right behind another (pools/locks.py take_tick) would otherwise make this one run nothing.
            redis.Redis.from_url(s.redis.url).delete(redis_keys.beat_tick())
            tasks.reconcile_all()
        finally:
            app.conf.task_always_eager = False
        stats = s.stats()
        return {f"ec2_reads_per_tick_{count}specs": stats["reads"],
                f"ec2_reads_per_tick_{count}specs_by_action": {
                    action: calls for action, calls in stats["calls"].items() if not is_mutating(action)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=("burst", "deploy", "scaleout", "single", "steady", "reads"))
    parser.add_argument("--nodes", type=int, default=None, help="default 100 (scaleout: 1000)")
    parser.add_argument("--every", type=float, default=2.0, help="single: seconds between two nodes")
    parser.add_argument("--specs", type=int, default=None,
                        help="reads: how many specs in the region (default 1); scaleout: over how many (default 10)")
    args = parser.parse_args(argv)
    scaling = args.scenario == "scaleout"
    nodes = args.nodes if args.nodes is not None else 1000 if scaling else 100
    specs = args.specs if args.specs is not None else 10 if scaling else 1
    if nodes < 1 or specs < 1 or (scaling and specs > nodes):
        parser.error("--nodes and --specs must be at least 1 (scaleout: no more specs than nodes)")
    started = time.monotonic()
    if args.scenario == "burst":
        result = burst(nodes)
    elif args.scenario == "deploy":
        result = deploy(nodes)
    elif scaling:
        result = scaleout(nodes, specs)
    elif args.scenario == "single":
        result = single(nodes, args.every)
    elif args.scenario == "steady":
        result = steady(nodes)
    else:
        result = reads(specs)
    result["_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
