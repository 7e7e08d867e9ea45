"""The audit export benchmark: 1,000,000 events (fixed seed), exported by `manage.py export_history` and
through gunicorn, on SQLite and, when DATABASE_URL points at one, PostgreSQL.

Keys for bench/results.json:
- `export_rows_per_s`: the command, CSV to a pipe that is read and thrown away (the worse database);
- `export_http_rows_per_s`: `/history/export.csv` through gunicorn started with the production settings,
  the whole body read by a real HTTP client (the worse database);
- `export_http_rows`: the rows that arrived, checked against the rows in the database and the trailer;
- `export_peak_rss_mb`: the peak RSS (VmHWM) of the exporting process, command or gunicorn worker.

`python -m bench.export [--quick] [--rows N]`; `--quick` seeds 100,000 events.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import http.client
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
SEED = 13

_KINDS = ["assigned", "released", "reassigned", "adopted", "taint_lifted", "pool_exhausted", "conflict", "error"]
_KIND_WEIGHTS = [30, 25, 2, 3, 30, 4, 3, 3]
_REASONS = [
    "new node", "node gone", "drained, pods gone", "operator moved it", "pool exhausted: 0 free of 40",
    "=HYPERLINK(\"http://x\")", "-drained", "AssociateAddress: InvalidAllocationID.NotFound", "",
    "taint lifted after the EIP answered", "found on the node", "@mention, with, commas", "line\nbreak",
]  # fmt: skip
_COLUMNS = ("timestamp", "kind", "launch_spec", "cluster", "region", "node", "instance_id", "public_ip",
            "allocation_id", "actor", "reason")  # fmt: skip


def event_rows(count: int, *, seed: int = SEED) -> Iterator[tuple[Any, ...]]:
    """`count` plausible events, oldest first, a few seconds apart; the same rows for the same seed.

    5,000 nodes (each with its instance) and 5,000 EIPs across 20 specs, as in the issue's data set."""
    rng = random.Random(seed)
    regions = ("us-east-1", "eu-west-1", "ap-south-1")
    specs = [(f"egress-{i:02d}", f"prod-{i % 3}", regions[i % 3]) for i in range(20)]
    nodes = [(f"ip-10-{i // 250}-{i % 250}-{i % 7}.ec2.internal", f"i-{rng.getrandbits(68):017x}") for i in range(5000)]
    eips = [(f"198.51.{i // 256}.{i % 256}", f"eipalloc-{rng.getrandbits(68):017x}") for i in range(5000)]
    kinds = rng.choices(_KINDS, _KIND_WEIGHTS, k=count)
    moment = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(microseconds=1)
    for index in range(count):
        moment += step * rng.randrange(6_000_000)
        spec = specs[index % 20]
        node = nodes[rng.randrange(5000)]
        eip = eips[rng.randrange(5000)]
        yield (
            moment, kinds[index], *spec, *node, *eip,
            "system" if index % 33 else "olivia-operator",
            _REASONS[index % len(_REASONS)],
        )  # fmt: skip


def seed_events(count: int, *, seed: int = SEED) -> int:
    """Insert the events straight into the table (bulk SQL, COPY on PostgreSQL): seeding 1M rows through
    the ORM would take longer than the benchmark itself. Returns the number of events in the table."""
    from django.db import connection, transaction

    table = "pools_event"
    names = ", ".join(_COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in event_rows(count, seed=seed):
                    copy.write_row(row)
        else:
            placeholders = ", ".join(["%s"] * len(_COLUMNS))
            sql = f"INSERT INTO {table} ({names}) VALUES ({placeholders})"
            batch: list[tuple[Any, ...]] = []
            for row in event_rows(count, seed=seed):
                # Stored as Django stores an aware datetime on SQLite: naive UTC text.
                batch.append((row[0].replace(tzinfo=None).isoformat(" "), *row[1:]))
                if len(batch) >= 20_000:
                    cursor.executemany(sql, batch)
                    batch.clear()
            if batch:
                cursor.executemany(sql, batch)
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        total = int(cursor.fetchone()[0])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
    return total


# --- One database: runs in its own process (Django settings are per process) -------------------------

_SECRET_KEY = "bench-export-" + "0123456789abcdef" * 4


def _env(database_url: str) -> dict[str, str]:
    """Production settings (DEBUG off) on the benchmark's database, for every process of the run."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "eipdash.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": _SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_COOKIES": "false",
        "DATABASE_URL": database_url,
        "EIPDASH_LOG_LEVEL": "WARNING",
    }


def _wait_rusage(process: subprocess.Popen[bytes]) -> float:
    """Wait for a child; its own peak RSS in MB (ru_maxrss of this child alone, in KiB on Linux)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024


def _trailer_rows(tail: bytes) -> int | None:
    found = re.search(rb"# eipdash export complete: (\d+) rows\r\n\Z", tail)
    return int(found.group(1)) if found else None


def _count_csv_rows(body: bytes) -> int:
    """Data rows, parsed as a CSV reader parses them (quoted line breaks included), trailer left out."""
    text = body.decode()
    return sum(1 for _ in csv.reader(io.StringIO(text[: text.rindex("# eipdash export complete")], newline=""))) - 1


def measure_command(database_url: str, expected: int) -> dict[str, float]:
    """`manage.py export_history` writing CSV to a pipe that this process reads and throws away."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "manage.py", "export_history"], cwd=ROOT, env=_env(database_url),
                               stdout=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None
    size, tail = 0, b""
    while block := process.stdout.read(1 << 20):
        size += len(block)
        tail = (tail + block)[-200:]
    peak = _wait_rusage(process)
    seconds = time.perf_counter() - start
    assert process.returncode == 0, process.returncode
    assert _trailer_rows(tail) == expected, tail
    return {"seconds": seconds, "rows_per_s": expected / seconds, "peak_rss_mb": peak, "bytes": size}


def _worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise TimeoutError("gunicorn started no worker")


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for {pid}")


def measure_http(database_url: str, expected: int) -> dict[str, float]:
    """`/history/export.csv` through gunicorn started as the Procfile starts it (gunicorn.conf.py), one
    worker process bound to loopback, the whole body read by http.client as fast as it comes."""
    from django.contrib.auth.models import User
    from django.test import Client

    from sandbox.ports import free_port, wait_for_port

    user, _ = User.objects.get_or_create(username="bench-export", defaults={"is_superuser": True})
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "eipdash.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", "/dev/null"],
        cwd=ROOT, env=_env(database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, 60)
        worker = _worker_pid(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start = time.perf_counter()
        conn.request("GET", "/history/export.csv", headers={"Cookie": cookie})
        response = conn.getresponse()
        assert response.status == 200, response.status
        parts = []
        while block := response.read(1 << 20):
            parts.append(block)
        seconds = time.perf_counter() - start
        conn.close()
        peak = _vm_hwm_mb(worker)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    body = b"".join(parts)
    trailer = _trailer_rows(body[-200:])
    rows = _count_csv_rows(body)
    assert trailer == rows == expected, (trailer, rows, expected)
    return {"seconds": seconds, "rows_per_s": rows / seconds, "rows": rows, "peak_rss_mb": peak,
            "bytes": len(body)}  # fmt: skip


def run_one(database_url: str, rows: int) -> dict[str, Any]:
    """Migrate, seed `rows` events, measure both paths. Prints one JSON object."""
    os.environ.update(_env(database_url))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    total = seed_events(rows)
    seeded = time.perf_counter() - start
    assert total == rows, (total, rows)
    connection.close()
    return {"vendor": connection.vendor, "rows": total, "seed_seconds": seeded,
            "command": measure_command(database_url, total), "http": measure_http(database_url, total)}  # fmt: skip


# --- The run: each database in its own process --------------------------------------------------------


def _postgres_database(base_url: str) -> tuple[str, Any]:
    """A fresh database on the server DATABASE_URL names (never the one it names: that holds data)."""
    import psycopg

    parsed = urlsplit(base_url)
    name = f"eipdash_bench_export_{os.getpid()}"
    admin = urlunsplit((parsed.scheme.replace("postgres", "postgresql", 1) if parsed.scheme == "postgres"
                        else parsed.scheme, parsed.netloc, "/postgres", "", ""))  # fmt: skip
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit((parsed.scheme, parsed.netloc, f"/{name}", parsed.query, "")), drop


def databases() -> Iterator[tuple[str, Any]]:
    """SQLite in a temporary file, and PostgreSQL when DATABASE_URL points at one."""
    workdir = Path(tempfile.mkdtemp(prefix="eipdash-bench-export-"))
    yield f"sqlite:///{workdir / 'bench.sqlite3'}", lambda: shutil.rmtree(workdir, ignore_errors=True)
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql://")):
        yield _postgres_database(base)


def bench_export(rows: int = FULL_ROWS) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Table rows for bench/run.py and the results.json keys (each the worse of the databases)."""
    per_db: list[dict[str, Any]] = []
    for url, cleanup in databases():
        try:
            done = subprocess.run([sys.executable, "-m", "bench.export", "--one", url, "--rows", str(rows)],
                                  cwd=ROOT, env=_env(url), capture_output=True, text=True, check=False)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"export benchmark on {url} failed:\n{done.stderr[-4000:]}")
            per_db.append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            cleanup()
    table: list[dict[str, object]] = []
    for result in per_db:
        for path in ("command", "http"):
            m = result[path]
            label = "manage.py export_history" if path == "command" else "/history/export.csv via gunicorn"
            table.append({
                "scenario": f"export {result['rows']:,} rows, {label} ({result['vendor']}): "
                            f"{m['rows_per_s']:,.0f} rows/s, peak RSS {m['peak_rss_mb']:.0f} MB",
                "median_ms": m["seconds"] * 1000, "max_ms": m["seconds"] * 1000,
            })  # fmt: skip
    keys: dict[str, object] = {
        "export_rows_per_s": round(min(r["command"]["rows_per_s"] for r in per_db)),
        "export_http_rows_per_s": round(min(r["http"]["rows_per_s"] for r in per_db)),
        "export_http_rows": min(r["http"]["rows"] for r in per_db),
        "export_peak_rss_mb": round(max(max(r["command"]["peak_rss_mb"], r["http"]["peak_rss_mb"]) for r in per_db), 1),
        "export_detail": per_db,
    }
    return table, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} events instead of {FULL_ROWS:,}")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--one", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    if args.one:
        print(json.dumps(run_one(args.one, rows)))
        return
    table, keys = bench_export(rows)
    for row in table:
        print(row["scenario"])
    print(json.dumps({k: v for k, v in keys.items() if k != "export_detail"}, indent=2))
    # Standalone: merge the keys into bench/results.json, leaving the other scenarios' results alone.
    results_path = ROOT / "bench" / "results.json"
    existing = json.loads(results_path.read_text()) if results_path.exists() else {}
    existing.update(keys)
    results_path.write_text(json.dumps(existing, indent=2))
    print("written bench/results.json")


if __name__ == "__main__":
    main()
