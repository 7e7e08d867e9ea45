"""Benchmarks (`make bench`): never part of `make test`. Prints a table and writes bench/results.json.

Scenarios:
- planner: the pure planner on 1,000 nodes and 1,000 EIPs.
- pass-100: one reconcile pass for 100 nodes through the real adapters, against the EC2 emulator (moto
  server) and the Kubernetes API emulator on loopback, on a fresh SQLite database: the first pass
  (100 assignments, 100 taints lifted) and a steady pass (nothing to do).
- export: the audit export of 1,000,000 events, command and HTTP through gunicorn (bench/export.py).
- dashboard: every page and poll through gunicorn at 5,000 EIPs, 5,000 live and 100,000 deleted nodes and
  1,000,000 events, SQLite and PostgreSQL (bench/dashboard.py: `dashboard_p95_ms`).
- steady pass with history: the CPU of a steady pass of 1,000 nodes without and with 100,000 deleted-node
  rows (bench/pass_history.py, in its own process: `pass_cpu_s`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def bench_planner() -> dict[str, object]:
    from pools.planner import EipView, NodeView, SpecView, plan

    nodes = [NodeView(f"n{i}", f"i-{i:x}", "running", f"eni-{i}", f"10.0.{i // 250}.{i % 250}", True)
             for i in range(1000)]
    eips = [EipView(f"eipalloc-{i}", f"198.51.{i // 250}.{i % 250}") for i in range(1000)]
    samples = timed(lambda: plan(SpecView("s", "k", None), eips, nodes, {}), 20)
    return {"scenario": "planner 1000 nodes / 1000 EIPs", "median_ms": statistics.median(samples) * 1000,
            "max_ms": max(samples) * 1000}


def bench_pass(node_count: int = 100) -> list[dict[str, object]]:
    workdir = Path(tempfile.mkdtemp(prefix="eipdash-bench-"))
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
    })
    os.environ.pop("REDIS_URL", None)
    import subprocess
    import urllib.request

    from sandbox.ec2_emulator import Ec2World
    from sandbox.kube_emulator import node_manifest
    from sandbox.ports import free_port, wait_for_port

    # The emulators run in their own processes, as AWS and the API server would: their work does not
    # share this process's GIL, so the timings are the engine's plus a loopback round trip per call.
    ec2_port, kube_port = free_port(), free_port()
    kubeconfig = workdir / "kubeconfig"
    servers = [
        subprocess.Popen([sys.executable, "-m", "sandbox.ec2_emulator", "--port", str(ec2_port)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "sandbox.kube_emulator", "--port", str(kube_port),
                          "--kubeconfig", str(kubeconfig)], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]
    try:
        wait_for_port(ec2_port, 30)
        wait_for_port(kube_port, 30)
        deadline = time.monotonic() + 30
        while not kubeconfig.exists():  # written by the emulator right after it starts listening
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Kubernetes emulator wrote no kubeconfig at {kubeconfig}")
            time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{ec2_port}"
        os.environ.update({"AWS_ENDPOINT_URL_EC2": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "KUBECONFIG": str(kubeconfig)})
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from pools import services
        from pools.models import Assignment
        from pools.specfile import parse_launch_spec
        from workers import executor

        spec, _ = services.launch_spec_apply(data=parse_launch_spec({
            "name": "bench", "labels": [{"key": "pool", "value": "bench"}],
            "elasticIpPool": {"tagSelector": {"tagKey": "pool", "tagValue": "bench"}}}))
        world = Ec2World(endpoint)
        for _ in range(node_count):
            world.allocate_eip({"pool": "bench"})
        for index in range(node_count):
            instance_id, _, _ = world.launch_instance()
            manifest = node_manifest(f"bench-{index:03d}", instance_id, "us-east-1a", {"pool": "bench"},
                                     [{"key": "eipdash.io/eip-pending", "value": "true", "effect": "NoSchedule"}])
            request = urllib.request.Request(f"http://127.0.0.1:{kube_port}/api/v1/nodes", method="POST",
                                             data=json.dumps(manifest).encode(),
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).close()

        # A worker imports the SDKs and builds its clients once, not per pass: warm them up (a dry run
        # changes nothing) so that the pass below measures the pass.
        executor.reconcile_spec(spec.pk, dry_run=True)
        tracemalloc.start()
        start = time.perf_counter()
        report = executor.reconcile_spec(spec.pk)
        first = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assigned = Assignment.objects.filter(closed_at__isnull=True, confirmed_at__isnull=False).count()
        assert assigned == node_count and not report.errors, (assigned, report.errors[:3])
        steady = timed(lambda: executor.reconcile_spec(spec.pk), 5)
        return [
            {"scenario": f"first pass, {node_count} nodes (assign + confirm + lift taint each)",
             "median_ms": first * 1000, "max_ms": first * 1000, "peak_python_mib": peak / 2**20},
            {"scenario": f"steady pass, {node_count} nodes (nothing to do)",
             "median_ms": statistics.median(steady) * 1000, "max_ms": max(steady) * 1000},
        ]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    from bench.dashboard import redis_for_production_settings

    with redis_for_production_settings():
        run_all()


def run_all() -> None:
    from bench.export import bench_export

    # First: bench_pass points DATABASE_URL at its own SQLite file, and the export bench reads it for PostgreSQL.
    export_table, export_keys = bench_export()
    from bench.dashboard import bench_dashboard

    dashboard_table, dashboard_keys = bench_dashboard()
    done = subprocess.run([sys.executable, "-m", "bench.pass_history"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    history = json.loads(done.stdout.strip().splitlines()[-1])
    history_table = [
        {"scenario": f"steady pass, {history['nodes']:,} nodes, {label}, CPU s (median / wall s)",
         "median_ms": history[key]["cpu_s"] * 1000, "max_ms": history[key]["wall_s"] * 1000}
        for key, label in (("steady_without", "no deleted rows"),
                           ("steady_with", f"{history['deleted_rows']:,} deleted-node rows"))
    ]
    results = [bench_planner(), *bench_pass(), *export_table, *dashboard_table, *history_table]
    width = max(len(str(r["scenario"])) for r in results)
    print(f"{'scenario':<{width}}  {'median ms':>10}  {'max ms':>10}")
    for r in results:
        print(f"{r['scenario']:<{width}}  {r['median_ms']:>10.1f}  {r['max_ms']:>10.1f}")
    out = {"when": datetime.now(UTC).isoformat(), "python": sys.version.split()[0], "results": results,
           **export_keys, **dashboard_keys,
           "pass_cpu_s": {"without_deleted": history["steady_without"]["cpu_s"],
                          "with_deleted": history["steady_with"]["cpu_s"]}}
    (ROOT / "bench" / "results.json").write_text(json.dumps(out, indent=2))
    print("written bench/results.json")


if __name__ == "__main__":
    main()
