"""Prometheus metrics: counted where things happen, exposed by /metrics.

Counters and histograms live in the process that does the work (a Celery worker's child, the watch, the
web). With ``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts: prometheus-client reads it at
import), every process writes its samples to files in that directory and /metrics sums them over the
processes of the host. Without it, each process keeps its own samples in memory and /metrics shows only
its own process's (fine for tests and single-process runs).

The pool gauges and the pass ages are not counted: they are read from the database at scrape time by
:class:`DatabaseCollector`, so they are right whichever process scrapes and survive restarts.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # prometheus-client opens its files there as the metrics below are created: the directory must exist.
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)

AWS_CALLS = Counter(
    "eipdash_aws_calls", "EC2 API calls by action and outcome (ok, or the error class).", ["action", "outcome"]
)
KUBE_CALLS = Counter(
    "eipdash_kube_calls", "Kubernetes API calls by verb and outcome (ok, or the error class).", ["verb", "outcome"]
)
RECONCILE_DURATION = Histogram(
    "eipdash_reconcile_duration_seconds",
    "Duration of one reconcile pass of a launch spec (skipped passes not counted).",
    ["spec"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TIME_TO_EIP = Histogram(
    "eipdash_time_to_eip_seconds",
    "From a node's first sighting to its EIP confirmed by AWS (observed once per node).",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
EVENTS = Counter("eipdash_events", "History events recorded, by kind.", ["kind"])

# Every metric name /metrics can show (the counters with their _total suffix), for the docs and the test
# that checks the alert rules and the dashboard only use names that exist.
METRIC_NAMES = (
    "eipdash_aws_calls_total",
    "eipdash_kube_calls_total",
    "eipdash_reconcile_duration_seconds",
    "eipdash_time_to_eip_seconds",
    "eipdash_events_total",
    "eipdash_pool_size",
    "eipdash_pool_in_use",
    "eipdash_pool_free",
    "eipdash_pool_conflict",
    "eipdash_nodes_waiting",
    "eipdash_nodes_waiting_oldest_seconds",
    "eipdash_nodes_draining_holding",
    "eipdash_history_events",
    "eipdash_last_successful_pass_timestamp_seconds",
    "eipdash_launch_spec_created_timestamp_seconds",
    "eipdash_reconcile_interval_seconds",
    "eipdash_pool_min_free",
    "eipdash_pool_peak",
    "eipdash_eip_quota",
    "eipdash_eips_allocated",
    "eipdash_pool_cost_usd_per_month",
)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def clear_multiproc_dir(path: str | os.PathLike[str]) -> None:
    """Empty the directory (creating it if needed). Only at the start of a host's first process: the files
    are keyed by pid, and a new process must not add to a dead process's counters of an earlier run."""
    directory = Path(path)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)


class DatabaseCollector(Collector):
    """Gauges read from the record at scrape time: a handful of queries, whatever the number of events."""

    def collect(self) -> Iterator[Metric]:
        # Imported here: the services import this module for the counters, the selectors import the models.
        from django.conf import settings
        from django.db.models import Min

        from pools import selectors
        from pools.models import LaunchSpec, Node

        stats = selectors.pool_stats_list()

        def per_spec(name: str, help_text: str, attr: str) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, help_text, labels=["launch_spec"])
            for row in stats:
                family.add_metric([row.spec.name], float(getattr(row, attr)))
            return family

        yield per_spec("eipdash_pool_size", "EIPs in the pool of a launch spec (tag selector).", "pool_size")
        yield per_spec("eipdash_pool_in_use", "Pool EIPs held by a node (open assignment).", "in_use")
        yield per_spec("eipdash_pool_free", "Pool EIPs free to hand out.", "free")
        yield per_spec("eipdash_pool_conflict", "Pool EIPs associated outside eipdash's record.", "conflict")
        yield per_spec("eipdash_nodes_waiting", "Nodes still waiting for an EIP.", "waiting_nodes")
        yield per_spec("eipdash_nodes_draining_holding", "Draining nodes that still hold an EIP.", "draining_holding")

        # What the overview's "Needs attention" panel shows (selectors.spec_problem_list): 1 per spec and problem.
        problems = selectors.spec_problem_list(stats=stats)
        misconfigured = GaugeMetricFamily(
            "eipdash_launch_spec_misconfigured",
            "1 when a launch spec cannot work as configured (see eipdash_launch_spec_problem), else 0.",
            labels=["launch_spec"],
        )
        # Misconfigured only for what makes the spec unable to work as configured: an exhausted pool or a conflict
        # is a problem of its own, and a draining spec (disabled on purpose) is neither.
        flagged = {problem.spec.pk for problem in problems if problem.misconfiguration}
        for row in stats:
            misconfigured.add_metric([row.spec.name], 1.0 if row.spec.pk in flagged else 0.0)
        yield misconfigured
        problem_family = GaugeMetricFamily(
            "eipdash_launch_spec_problem",
            f"An ongoing problem of a launch spec: {', '.join(selectors.SPEC_PROBLEM_CODES)}.",
            labels=["launch_spec", "problem"],
        )
        # One series per spec and code: two conflicts of one spec are one "conflict" series.
        for name, code in dict.fromkeys((problem.spec.name, problem.code) for problem in problems):
            problem_family.add_metric([name, code], 1.0)
        yield problem_family
        yield from self.capacity(stats)

        # How long the longest-waiting node of each spec has waited: "nodes waiting over 5 minutes".
        now = time.time()
        oldest = GaugeMetricFamily(
            "eipdash_nodes_waiting_oldest_seconds",
            "Age of the oldest node of a launch spec still waiting for its EIP (0 when none waits).",
            labels=["launch_spec"],
        )
        waiting = dict(
            Node.objects.filter(state=Node.State.WAITING, deleted_at__isnull=True, launch_spec__isnull=False)
            .values("launch_spec__name").annotate(first=Min("first_seen_at"))
            .values_list("launch_spec__name", "first")
        )
        for row in stats:
            first = waiting.get(row.spec.name)
            oldest.add_metric([row.spec.name], max(0.0, now - first.timestamp()) if first else 0.0)
        yield oldest

        history = GaugeMetricFamily("eipdash_history_events", "Events in the history (database), by kind.",
                                    labels=["kind"])
        for kind, count in sorted(selectors.event_counts_by_kind().items()):
            history.add_metric([kind], float(count))
        yield history

        last = GaugeMetricFamily(
            "eipdash_last_successful_pass_timestamp_seconds",
            "When the last pass of an enabled launch spec read AWS and Kubernetes and applied its whole plan.",
            labels=["spec"],
        )
        created = GaugeMetricFamily("eipdash_launch_spec_created_timestamp_seconds",
                                    "When an enabled launch spec was created.", labels=["spec"])
        for name, last_at, created_at in LaunchSpec.objects.filter(enabled=True).values_list(
            "name", "last_successful_pass_at", "created_at"
        ):
            if last_at is not None:
                last.add_metric([name], last_at.timestamp())
            created.add_metric([name], created_at.timestamp())
        yield last
        yield created
        interval = GaugeMetricFamily("eipdash_reconcile_interval_seconds",
                                     "The beat period of reconcile_all (EIPDASH_RECONCILE_SECONDS).")
        interval.add_metric([], float(settings.EIPDASH_RECONCILE_SECONDS))
        yield interval


    def capacity(self, stats: Sequence[Any]) -> Iterator[Metric]:
        """The capacity gauges (pools/selectors_capacity.py): headroom, peaks, the region's quota, the cost. The
        peaks are not swept again on each scrape: every spec's demand profile is kept in the cache, and a scrape
        reads one query of signals (the last deletion and close of each spec, its live nodes and open assignments)
        to find them still valid, then looks the 7- and 30-day peaks up (peak_list; a row that only leaves the
        history, by the retention, shows within selectors_demand.TRUST_SECONDS). The rest from grouped counts.
        Labelled launch_spec like the other pool gauges, so that a rule can compare eipdash_pool_free with
        eipdash_pool_min_free as they are."""
        from pools import selectors_capacity

        specs = [row.spec for row in stats]
        min_free = GaugeMetricFamily("eipdash_pool_min_free",
                                     "The headroom of a launch spec: fewer free pool EIPs than this raises pool_low.",
                                     labels=["launch_spec"])
        peak = GaugeMetricFamily(
            "eipdash_pool_peak",
            "The most nodes of a launch spec that held or waited for an EIP at the same moment in the window.",
            labels=["launch_spec", "window"],
        )
        cost = GaugeMetricFamily(
            "eipdash_pool_cost_usd_per_month",
            "What the pool's addresses cost in a month (730 hours) at EIPDASH_IPV4_HOURLY_USD; BYOIP ones are free.",
            labels=["launch_spec"],
        )
        peaks = selectors_capacity.peak_list(specs=specs)
        for row in stats:  # the billable addresses from the pool counts (pool_cost_list's, without reading again)
            spec = row.spec
            min_free.add_metric([spec.name], float(spec.min_free))
            week, month = peaks[spec.pk]
            peak.add_metric([spec.name, "7d"], float(week.count))
            peak.add_metric([spec.name, "30d"], float(month.count))
            cost.add_metric([spec.name], selectors_capacity.monthly_usd(row.pool_size - row.byoip))
        yield min_free
        yield peak
        yield cost
        quota = GaugeMetricFamily("eipdash_eip_quota", "The account's EIP quota in a region, as last read "
                                  "(absent while unknown).", labels=["region"])
        allocated = GaugeMetricFamily("eipdash_eips_allocated",
                                      "Elastic IPs allocated in a region per the last reading (pools and unmanaged).",
                                      labels=["region"])
        for region, facts in sorted(selectors_capacity.region_quota_list(
                regions={spec.cluster.region for spec in specs}).items()):
            if facts.limit is not None:
                quota.add_metric([region], float(facts.limit))
            allocated.add_metric([region], float(facts.allocated))
        yield quota
        yield allocated


class _Together:
    """Several collectors as one registry for generate_latest."""

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def exposition() -> bytes:
    """The text of /metrics: every process's counters (this process's alone without the shared directory)
    and the database gauges."""
    path = multiproc_dir()
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        process_metrics: Any = registry
    else:
        process_metrics = REGISTRY
    return generate_latest(_Together(process_metrics, DatabaseCollector()))  # type: ignore[arg-type]
