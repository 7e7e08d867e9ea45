"""The CPU of a steady reconcile pass of 1,000 nodes, without and with 100,000 deleted-node rows in the history.

A cluster keeps a Node row (and a closed assignment) for every node it ever had; a pass must not slow down
as they pile up. The pass runs through the real adapters against the EC2 emulator (moto server) and the
Kubernetes API emulator, each in its own process, on a fresh SQLite database: the CPU figure
(time.process_time) is the pass's own, not the emulators'.

`python -m bench.pass_history [--nodes N] [--deleted N]`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEADY_PASSES = 5


def steady_cpu(spec_id: int) -> dict[str, float]:
    from workers import executor

    cpu, wall = [], []
    for _ in range(STEADY_PASSES):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        report = executor.reconcile_spec(spec_id)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
        assert not report.errors and report.done == [], (report.errors[:3], report.done[:3])
    return {"cpu_s": round(statistics.median(cpu), 3), "wall_s": round(statistics.median(wall), 3)}


def add_deleted_nodes(spec_id: int, count: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from pools.models import Assignment, ElasticIP, LaunchSpec, Node

    spec = LaunchSpec.objects.select_related("cluster").get(pk=spec_id)
    eips = list(ElasticIP.objects.all()[:50])
    gone_at = timezone.now() - dt.timedelta(days=2)
    with transaction.atomic():
        Node.objects.bulk_create(
            [Node(cluster=spec.cluster, name=f"old-{i:06d}", instance_id=f"i-old{i:012d}", launch_spec=spec,
                  state=Node.State.GONE, labels=dict(spec.labels), instance_state="terminated",
                  eni_id=f"eni-old{i:012d}", private_ip="10.200.0.1", first_seen_at=gone_at, last_seen_at=gone_at,
                  deleted_at=gone_at) for i in range(count)], batch_size=5000)  # fmt: skip
        ids = Node.objects.filter(name__startswith="old-").values_list("pk", flat=True)
        Assignment.objects.bulk_create(
            [Assignment(eip=eips[i % len(eips)], node_id=pk, launch_spec=spec, opened_at=gone_at, confirmed_at=gone_at,
                        closed_at=gone_at, close_reason="node deleted", close_kind=Assignment.CloseKind.RELEASED)
             for i, pk in enumerate(ids)], batch_size=5000)  # fmt: skip


def run(node_count: int, deleted: int) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="eipdash-bench-history-"))
    os.environ.update({"DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true",
                       "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}", "EIPDASH_LOG_LEVEL": "WARNING"})
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    from sandbox.ec2_emulator import Ec2World
    from sandbox.kube_emulator import node_manifest
    from sandbox.ports import free_port, wait_for_port

    ec2_port, kube_port = free_port(), free_port()
    kubeconfig = workdir / "kubeconfig"
    servers = [
        subprocess.Popen([sys.executable, "-m", "sandbox.ec2_emulator", "--port", str(ec2_port)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "sandbox.kube_emulator", "--port", str(kube_port),
                          "--kubeconfig", str(kubeconfig)], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        wait_for_port(ec2_port, 30)
        wait_for_port(kube_port, 30)
        deadline = time.monotonic() + 30
        while not kubeconfig.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the Kubernetes emulator wrote no kubeconfig")
            time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{ec2_port}"
        os.environ.update({"AWS_ENDPOINT_URL_EC2": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "KUBECONFIG": str(kubeconfig)})  # fmt: skip
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from pools import services
        from pools.specfile import parse_launch_spec
        from workers import executor

        spec, _ = services.launch_spec_apply(data=parse_launch_spec({
            "name": "bench", "labels": [{"key": "pool", "value": "bench"}],
            "elasticIpPool": {"tagSelector": {"tagKey": "pool", "tagValue": "bench"}}}))  # fmt: skip
        world = Ec2World(endpoint)
        for _ in range(node_count):
            world.allocate_eip({"pool": "bench"})
        for index in range(node_count):
            instance_id, _, _ = world.launch_instance()
            manifest = node_manifest(f"bench-{index:04d}", instance_id, "us-east-1a", {"pool": "bench"}, [])
            request = urllib.request.Request(f"http://127.0.0.1:{kube_port}/api/v1/nodes", method="POST",
                                             data=json.dumps(manifest).encode(),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            urllib.request.urlopen(request, timeout=10).close()
        with_settings = {"EIPDASH_PASS_SECONDS": 3600}
        from django.conf import settings

        for key, value in with_settings.items():
            setattr(settings, key, value)  # the first pass of 1,000 assignments must not stop at its deadline
        first = executor.reconcile_spec(spec.pk)
        assert not first.errors and not first.left, first.errors[:3]
        without = steady_cpu(spec.pk)
        add_deleted_nodes(spec.pk, deleted)
        with_history = steady_cpu(spec.pk)
        return {"nodes": node_count, "deleted_rows": deleted, "steady_without": without, "steady_with": with_history}
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deleted", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(run(args.nodes, args.deleted)))


if __name__ == "__main__":
    main()
