from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools.models import Cluster
from pools.services import cluster_default
from workers.tasks import reconcile_spec
from workers.watch import watch_cluster, watch_clusters


class Command(BaseCommand):
    help = ("Watch Kubernetes nodes and enqueue a reconcile pass as soon as a node of a launch spec changes: "
            "one watch stream per configured cluster (or only --cluster).")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--cluster", help="watch only this cluster (default: every configured cluster, "
                                              "including those added while the watch runs)")
        parser.add_argument("--stop-after", type=float, help="stop after this many seconds (tests)")
        parser.add_argument(
            "--heartbeat-file", type=Path,
            help="touched at least every 30 s while the watch runs, also during a Redis outage (liveness probe)",
        )
        parser.add_argument(
            "--max-backoff", type=float, default=15.0,
            help="longest wait between two enqueue attempts while Redis is unreachable (seconds, default 15)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        common = dict(stop_after=options["stop_after"], heartbeat_file=options["heartbeat_file"],
                      max_backoff=options["max_backoff"])
        if options["cluster"]:
            cluster = Cluster.objects.filter(name=options["cluster"]).first()
            if cluster is None:
                raise CommandError(f"no cluster named {options['cluster']!r}", returncode=2)
            self.started(cluster)
            watch_cluster(cluster, reconcile_spec.delay, **common)  # type: ignore[arg-type]
            return
        if not Cluster.objects.exists():
            cluster_default()  # the cluster that launch specs join when they name none
        watch_clusters(reconcile_spec.delay, started=self.started, **common)  # type: ignore[arg-type]

    def started(self, cluster: Cluster) -> None:
        self.stdout.write(f"watching the nodes of cluster {cluster.name}", ending="\n")
        self.stdout.flush()
