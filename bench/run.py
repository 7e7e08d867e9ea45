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
- the engine at EC2's rate limit (bench/engine.py, each scenario in its own process, the EC2 emulator behind
  80 ms of latency and EC2's request token buckets): `burst_{N}_*` (100, 300, 1,000 nodes at once),
  `deploy_burst_300_*` (Celery worker, beat and watch), `scaleout_burst_1000_*` (1,000 nodes over 10 specs
  of one region, two Celery workers), `tte_single_*` (nodes one by one),
  `steady_cpu_s_{N}` / `steady_wall_s_{N}` (1,000 and 5,000 nodes), `ec2_reads_per_tick_{S}specs`.

`python -m bench.run [--quick] [--only GROUP,...]` (`make bench BENCH_ARGS="..."`); the groups: planner, pass,
history, export, dashboard, burst, deploy, scaleout, single, steady, reads. bench/results.json is merged, not
replaced: a run of some groups keeps the last results of the others.
"""

from __future__ import annotations

import argparse
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


# The engine at EC2's rate limit (bench/engine.py), each scenario in its own process: (group, argv, sizes).
ENGINE_FULL: list[tuple[str, list[str]]] = [
    ("burst", ["burst", "--nodes", "100"]), ("burst", ["burst", "--nodes", "300"]),
    ("burst", ["burst", "--nodes", "1000"]),
    ("deploy", ["deploy", "--nodes", "300"]),
    ("scaleout", ["scaleout", "--nodes", "1000", "--specs", "10"]),
    ("single", ["single", "--nodes", "20", "--every", "2"]),
    ("steady", ["steady", "--nodes", "1000"]), ("steady", ["steady", "--nodes", "5000"]),
    ("reads", ["reads", "--specs", "1"]), ("reads", ["reads", "--specs", "5"]), ("reads", ["reads", "--specs", "20"]),
]
ENGINE_QUICK: list[tuple[str, list[str]]] = [
    ("burst", ["burst", "--nodes", "30"]), ("burst", ["burst", "--nodes", "60"]),
    ("deploy", ["deploy", "--nodes", "60"]),
    ("scaleout", ["scaleout", "--nodes", "100", "--specs", "4"]),
    ("single", ["single", "--nodes", "8", "--every", "2"]),
    ("steady", ["steady", "--nodes", "200"]), ("steady", ["steady", "--nodes", "1000"]),
    ("reads", ["reads", "--specs", "1"]), ("reads", ["reads", "--specs", "5"]), ("reads", ["reads", "--specs", "20"]),
]
# Wall-clock bound of one engine scenario process: it stops by itself well before (its own deadlines).
ENGINE_TIMEOUT_S = 1800
GROUPS = ("planner", "pass", "history", "export", "dashboard", "burst", "deploy", "scaleout", "single", "steady",
          "reads")

# Issue 10's targets: key -> (comparison, target).
TARGETS: dict[str, tuple[str, float]] = {
    "burst_100_over_bound": ("<=", 1.10), "burst_300_over_bound": ("<=", 1.10),
    "burst_1000_over_bound": ("<=", 1.10), "burst_100_tte_p50_s": ("<=", 2.0),
    "burst_100_throttled_calls": ("<=", 0), "burst_300_throttled_calls": ("<=", 0),
    "burst_1000_throttled_calls": ("<=", 0), "deploy_burst_300_over_bound": ("<=", 1.15),
    "scaleout_burst_1000_over_bound": ("<=", 1.10), "scaleout_burst_1000_throttled_calls": ("<=", 0),
    "tte_single_p50_s": ("<=", 1.0), "tte_single_p99_s": ("<=", 2.0), "steady_cpu_s_5000": ("<=", 0.3),
    "export_rows_per_s": (">=", 100_000), "export_peak_rss_mb": ("<=", 150),
}


def machine() -> dict[str, object]:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                      if line.startswith("Model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0]}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_engine(argv: list[str]) -> dict[str, object]:
    """One engine scenario in its own process; its JSON line, plus the load average before and after."""
    before = load()
    done = subprocess.run([sys.executable, "-m", "bench.engine", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=ENGINE_TIMEOUT_S)
    if done.returncode != 0:
        # One failed scenario must not lose the others' numbers: say so, in the results too.
        print(f"bench.engine {' '.join(argv)} FAILED:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", flush=True)
        return {f"failed_{argv[0]}_{argv[2]}": done.stderr.strip().splitlines()[-1:] or ["no output"]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    result[f"load_{argv[0]}_{argv[2]}"] = {"before": before, "after": load()}
    return result


def verdict(key: str, value: object) -> str:
    if key not in TARGETS or not isinstance(value, int | float):
        return ""
    op, target = TARGETS[key]
    met = value <= target if op == "<=" else value >= target
    return f"{op} {target:g}: {'met' if met else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for development")
    parser.add_argument("--only", default="", help=f"comma-separated groups among {', '.join(GROUPS)} (default: all)")
    args = parser.parse_args()
    only = [g.strip() for g in args.only.split(",") if g.strip()] or list(GROUPS)
    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; known: {', '.join(GROUPS)}")
    from bench.dashboard import redis_for_production_settings

    with redis_for_production_settings():
        run_all(only, args.quick)


def run_all(only: list[str], quick: bool = False) -> None:
    results: list[dict[str, object]] = []
    keys: dict[str, object] = {}
    # First: bench_pass points DATABASE_URL at its own SQLite file, and the export bench reads it for PostgreSQL.
    if "export" in only:
        from bench.export import QUICK_ROWS, bench_export

        export_table, export_keys = bench_export(QUICK_ROWS) if quick else bench_export()
        results += export_table
        keys.update(export_keys)
    if "dashboard" in only:
        from bench.dashboard import bench_dashboard

        dashboard_table, dashboard_keys = bench_dashboard(quick)
        results += dashboard_table
        keys.update(dashboard_keys)
    if "history" in only:
        sizes = ["--nodes", "200", "--deleted", "10000"] if quick else []
        done = subprocess.run([sys.executable, "-m", "bench.pass_history", *sizes], cwd=ROOT, capture_output=True,
                              text=True, check=True)
        history = json.loads(done.stdout.strip().splitlines()[-1])
        results += [
            {"scenario": f"steady pass, {history['nodes']:,} nodes, {label}, CPU s (median / wall s)",
             "median_ms": history[key]["cpu_s"] * 1000, "max_ms": history[key]["wall_s"] * 1000}
            for key, label in (("steady_without", "no deleted rows"),
                               ("steady_with", f"{history['deleted_rows']:,} deleted-node rows"))
        ]
        keys["pass_cpu_s"] = {"without_deleted": history["steady_without"]["cpu_s"],
                              "with_deleted": history["steady_with"]["cpu_s"]}
    engine: dict[str, object] = {}
    for group, argv in ENGINE_QUICK if quick else ENGINE_FULL:
        if group in only:
            print(f"bench.engine {' '.join(argv)} (load {load()})", flush=True)
            engine.update(run_engine(argv))
    keys.update(engine)
    if "planner" in only:
        results.append(bench_planner())
    if "pass" in only:
        results += bench_pass()
    if results:
        width = max(len(str(r["scenario"])) for r in results)
        print(f"{'scenario':<{width}}  {'median ms':>10}  {'max ms':>10}")
        for r in results:
            print(f"{r['scenario']:<{width}}  {r['median_ms']:>10.1f}  {r['max_ms']:>10.1f}")
    flat = {k: v for k, v in keys.items() if isinstance(v, int | float) and not k.startswith("_")}
    if flat:
        width = max(len(k) for k in flat)
        print(f"\n{'key':<{width}}  {'value':>10}  target")
        for key, value in flat.items():
            print(f"{key:<{width}}  {value:>10g}  {verdict(key, value)}")
    # Merged into what is there: a run of some groups (--only) keeps the other groups' last results.
    path = ROOT / "bench" / "results.json"
    out: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    out.update({"when": datetime.now(UTC).isoformat(), "quick": quick, "groups": only, "machine": machine(),
                **keys})
    if results:
        out["results"] = results
    path.write_text(json.dumps(out, indent=2))
    print("written bench/results.json")


if __name__ == "__main__":
    main()
