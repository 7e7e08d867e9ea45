"""The dashboard benchmark: every page and poll through gunicorn, at the issue's size, on SQLite and, when
DATABASE_URL points at one, PostgreSQL (a temporary database on that server).

The data (fixed seed): 20 launch specs in 3 clusters/regions, 10,000 EIPs, 100,000 node rows (10,000 live ones,
ready, waiting or draining, and 90,000 deleted ones each with a closed assignment), 1,000,000 events
(bench/export.py's rows), and each spec's plan as its last pass stored it.
gunicorn is started as the Procfile starts it (`gunicorn -c gunicorn.conf.py eipdash.wsgi:application`,
DEBUG off, its default processes and threads), bound to loopback; one logged-in client asks each page
`REQUESTS` times in a row (after a few warm-up requests) and we keep p50 and p95 of the wall time.

Keys for bench/results.json: `dashboard_p95_ms` {page: ms}, the worse of the databases, and
`dashboard_detail` (p50/p95 per database).

`python -m bench.dashboard [--quick]`; `--quick` seeds a tenth of everything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import ipaddress
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = 13
REQUESTS = 30
WARMUP = 3
SPECS = 20
FULL = {"eips": 10_000, "live": 10_000, "gone": 90_000, "events": 1_000_000}
QUICK = {"eips": 1000, "live": 1000, "gone": 9000, "events": 100_000}
REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
PAGES: dict[str, tuple[str, dict[str, str]]] = {
    "overview": ("/", {}),
    "overview_poll": ("/", {"HX-Request": "true"}),
    "spec_detail": ("/launch-specs/egress-00/", {}),
    # The spec page's Capacity section, as htmx asks for it right after the page and then every 30 seconds; and
    # with the 30-day demand chart (the range over the most rows), once the reader picked it.
    "spec_capacity_poll": ("/launch-specs/egress-00/", {"HX-Request": "true", "HX-Target": "spec-capacity"}),
    "spec_capacity_30d": ("/launch-specs/egress-00/?range=30d", {"HX-Request": "true", "HX-Target": "spec-capacity"}),
    # One node's page (its facts, timeline and why it waits, if it does).
    "node": ("/nodes/prod-0/ip-10-0-0-live.ec2.internal/", {}),
    "metrics": ("/metrics", {}),
    # The last page (a number past the end gives the last page; "last" is not a number to the Paginator, which
    # gave page 1): the rows the databases must walk past before the page's 50.
    "eips": ("/eips/?page=99999", {}),
    "nodes": ("/nodes/?page=99999", {}),
    "history": ("/history/", {}),
    # An operator's name: what "what did Olivia do" looks like (about 3% of the rows match).
    "history_search": ("/history/?q=olivia", {}),
    # The API's capacity report (the section's figures) and allowlist, with the page's session.
    "api_capacity": ("/api/v1/launch-specs/egress-00/capacity", {}),
    "api_egress_ips": ("/api/v1/launch-specs/egress-00/egress-ips", {}),
}
# Measured and reported in dashboard_detail, not in dashboard_p95_ms: the history of one node (about 200 of the
# million rows match), the search that used to read the whole table.
EXTRA_PAGES: dict[str, tuple[str, dict[str, str]]] = {
    "history_search_node": ("/history/?q=ip-10-7-123-", {}),
}


def seed_dashboard(size: dict[str, int], *, seed: int = SEED) -> dict[str, int]:
    """Clusters, specs, EIPs, live and deleted nodes with their assignments, then the events. Bulk inserts."""
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.export import seed_events
    from pools import services
    from pools.models import Assignment, Cluster, ElasticIP, LaunchSpec, Node
    from pools.planner import plan as make_plan
    from pools.snapshot import planner_inputs

    rng = random.Random(seed)
    now = timezone.now()
    clusters = [Cluster.objects.create(name=f"prod-{i}", region=REGIONS[i]) for i in range(3)]
    specs = [
        LaunchSpec.objects.create(name=f"egress-{i:02d}", cluster=clusters[i % 3], labels={"pool": f"egress-{i:02d}"},
                                  tag_key="eipdash.io/pool", tag_value=f"egress-{i:02d}",
                                  last_reconciled_at=now, last_successful_pass_at=now)
        for i in range(SPECS)
    ]  # fmt: skip
    base_ip = int(ipaddress.IPv4Address("198.51.0.0"))
    eips_by_spec: dict[int, list[ElasticIP]] = {s.pk: [] for s in specs}
    eip_rows = []
    for k in range(size["eips"]):
        spec = specs[k % SPECS]
        row = ElasticIP(allocation_id=f"eipalloc-{rng.getrandbits(68):017x}", region=spec.cluster.region,
                        public_ip=str(ipaddress.IPv4Address(base_ip + k)),
                        tags={"eipdash.io/pool": spec.tag_value, "team": f"team-{k % 7}"}, last_seen_at=now)
        eip_rows.append(row)
        eips_by_spec[spec.pk].append(row)
    with transaction.atomic():
        ElasticIP.objects.bulk_create(eip_rows, batch_size=2000)
    eip_rows = list(ElasticIP.objects.order_by("pk"))  # with their ids (SQLite's bulk_create returns none)
    by_alloc = {e.allocation_id: e for e in eip_rows}
    eips_by_spec = {pk: [by_alloc[e.allocation_id] for e in rows] for pk, rows in eips_by_spec.items()}

    def instance() -> str:
        return f"i-{rng.getrandbits(68):017x}"

    live, holding = [], []
    for k in range(size["live"]):
        spec = specs[k % SPECS]
        first = now - dt.timedelta(seconds=rng.randrange(3 * 86400))
        kind = k // SPECS % 25
        state = Node.State.WAITING if kind == 0 else Node.State.DRAINING if kind == 1 else Node.State.READY
        ready_at = None if state == Node.State.WAITING else first + dt.timedelta(seconds=rng.uniform(2, 90))
        node = Node(cluster=spec.cluster, name=f"ip-10-{k // 250}-{k % 250}-live.ec2.internal", instance_id=instance(),
                    az=f"{spec.cluster.region}a", launch_spec=spec, state=state, labels=spec.labels,
                    instance_state="running", eni_id=f"eni-{rng.getrandbits(68):017x}",
                    private_ip=f"10.{k // 250}.{k % 250}.9", startup_tainted=state == Node.State.WAITING,
                    draining=state == Node.State.DRAINING, workload_pods=3 if state == Node.State.DRAINING else None,
                    first_seen_at=first, last_seen_at=now, eip_ready_at=ready_at)  # fmt: skip
        live.append(node)
        if state != Node.State.WAITING:
            holding.append(node)
    gone = []
    for k in range(size["gone"]):
        spec = specs[k % SPECS]
        deleted = now - dt.timedelta(seconds=rng.randrange(30 * 86400))
        first = deleted - dt.timedelta(seconds=rng.randrange(600, 2 * 86400))
        gone.append(Node(cluster=spec.cluster, name=f"ip-10-{k // 250 % 250}-{k % 250}-{k // 62500}.gone.internal",
                         instance_id=instance(), az=f"{spec.cluster.region}a", launch_spec=spec, state=Node.State.GONE,
                         labels=spec.labels, instance_state="terminated", eni_id=f"eni-{rng.getrandbits(68):017x}",
                         private_ip="10.99.0.1", first_seen_at=first, last_seen_at=deleted, deleted_at=deleted,
                         eip_ready_at=first + dt.timedelta(seconds=rng.uniform(2, 90))))  # fmt: skip
    with transaction.atomic():
        Node.objects.bulk_create(live + gone, batch_size=2000)
    node_ids = dict(Node.objects.values_list("name", "pk"))
    assignments = []
    used: dict[int, int] = {s.pk: 0 for s in specs}
    for node in holding:
        assert node.launch_spec_id is not None
        pool = eips_by_spec[node.launch_spec_id]
        eip = pool[used[node.launch_spec_id] % len(pool)]
        used[node.launch_spec_id] += 1
        opened = node.first_seen_at + dt.timedelta(seconds=1)
        eip.association_id, eip.eni_id, eip.private_ip, eip.instance_id = (
            f"eipassoc-{rng.getrandbits(68):017x}", node.eni_id, node.private_ip, node.instance_id)
        assignments.append(Assignment(eip=eip, node_id=node_ids[node.name], launch_spec=node.launch_spec,
                                      eni_id=node.eni_id, private_ip=node.private_ip,
                                      association_id=eip.association_id, opened_at=opened, confirmed_at=opened))
    for node in gone:
        assert node.launch_spec_id is not None
        eip = rng.choice(eips_by_spec[node.launch_spec_id])
        opened = node.first_seen_at + dt.timedelta(seconds=1)
        assignments.append(Assignment(eip=eip, node_id=node_ids[node.name], launch_spec=node.launch_spec,
                                      eni_id=node.eni_id, private_ip=node.private_ip,
                                      association_id=f"eipassoc-{rng.getrandbits(68):017x}", opened_at=opened,
                                      confirmed_at=opened, closed_at=node.deleted_at, close_reason="node gone",
                                      close_kind=Assignment.CloseKind.RELEASED))  # fmt: skip
    with transaction.atomic():
        Assignment.objects.bulk_create(assignments, batch_size=2000)
        ElasticIP.objects.bulk_update([e for e in eip_rows if e.association_id],
                                      ["association_id", "eni_id", "private_ip", "instance_id"], batch_size=2000)
    events = seed_events(size["events"], seed=seed)
    for spec in specs:  # what each spec's last pass stored for its page (services.spec_plan_store)
        inputs = planner_inputs(spec)
        services.spec_plan_store(spec=spec, plan=make_plan(*inputs), eips=inputs[1], nodes=inputs[2],
                                 claims=inputs[3], fence=0, planned_at=now)
    with connection.cursor() as cursor:
        # A production database is vacuumed and analyzed by autovacuum; a freshly loaded one is not yet.
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    return {"eips": len(eip_rows), "live_nodes": len(live), "gone_nodes": len(gone), "assignments": len(assignments),
            "events": events}


def _login_cookie() -> str:
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench-dashboard", defaults={"is_superuser": True})
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def measure(database_url: str, requests: int = REQUESTS) -> dict[str, dict[str, float]]:
    """p50/p95 (ms) of each page through gunicorn started as the Procfile starts it."""
    from bench.export import _env
    from sandbox.ports import free_port, wait_for_port

    cookie = _login_cookie()
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "eipdash.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--access-logfile", "/dev/null"],
        cwd=ROOT, env=_env(database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    try:
        wait_for_port(port, 60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for page, (path, headers) in {**PAGES, **EXTRA_PAGES}.items():
            samples = []
            size = 0
            for index in range(WARMUP + requests):
                start = time.perf_counter()
                conn.request("GET", path, headers={"Cookie": cookie, **headers})
                response = conn.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - start
                assert response.status == 200, (page, response.status, body[:300])
                if index >= WARMUP:
                    samples.append(elapsed * 1000)
                    size = len(body)
            results[page] = {"p50": round(statistics.median(samples), 1), "p95": round(_percentile(samples, 0.95), 1),
                             "kb": round(size / 1024, 1)}  # fmt: skip
        conn.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    return results


def run_one(database_url: str, quick: bool) -> dict[str, Any]:
    from bench.export import _env

    os.environ.update(_env(database_url))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    counts = seed_dashboard(QUICK if quick else FULL)
    seeded = time.perf_counter() - start
    connection.close()
    return {"vendor": connection.vendor, "seed_seconds": round(seeded, 1), **counts, "pages": measure(database_url)}


@contextmanager
def redis_for_production_settings() -> Iterator[None]:
    """Production settings (DEBUG off) require REDIS_URL: the one in the environment, else an embedded Redis
    for the length of the run (the pages measured here do not use it)."""
    if os.environ.get("REDIS_URL"):
        yield
        return
    sys.path.insert(0, str(ROOT))
    from sandbox.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis().start()
    os.environ["REDIS_URL"] = server.url
    try:
        yield
    finally:
        os.environ.pop("REDIS_URL", None)
        server.stop()


def bench_dashboard(quick: bool = False) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Table rows for bench/run.py and the results.json keys (each page: the worse of the databases)."""
    from bench.export import _env, databases

    per_db: list[dict[str, Any]] = []
    for url, cleanup in databases():
        try:
            args = [sys.executable, "-m", "bench.dashboard", "--one", url] + (["--quick"] if quick else [])
            done = subprocess.run(args, cwd=ROOT, env=_env(url), capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"dashboard benchmark on {url} failed:\n{done.stderr[-4000:]}")
            per_db.append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            cleanup()
    table: list[dict[str, object]] = []
    for result in per_db:
        for page, m in result["pages"].items():
            table.append({"scenario": f"dashboard {page} ({result['vendor']}, {m['kb']} KB), p50 / p95 ms",
                          "median_ms": m["p50"], "max_ms": m["p95"]})
    keys: dict[str, object] = {
        "dashboard_p95_ms": {page: max(r["pages"][page]["p95"] for r in per_db) for page in PAGES},
        "dashboard_eips": min(int(r["eips"]) for r in per_db),
        "dashboard_detail": per_db,
    }
    return table, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the data set")
    parser.add_argument("--one", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.quick)))
        return
    with redis_for_production_settings():
        table, keys = bench_dashboard(args.quick)
    for row in table:
        print(f"{row['scenario']}: {row['median_ms']} / {row['max_ms']}")
    print(json.dumps(keys["dashboard_p95_ms"], indent=2))
    if not args.quick:
        # Standalone: merge the keys into bench/results.json, leaving the other scenarios' results alone.
        results_path = ROOT / "bench" / "results.json"
        existing = json.loads(results_path.read_text()) if results_path.exists() else {}
        existing.update(keys)
        results_path.write_text(json.dumps(existing, indent=2))
        print("written bench/results.json")


if __name__ == "__main__":
    main()
