from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools.models import Cluster
from pools.services import cluster_default
from workers.tasks import reconcile_spec
from workers.watch import watch_cluster


class Command(BaseCommand):
    help = "Watch Kubernetes nodes and enqueue a reconcile pass as soon as a node of a launch spec changes."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--cluster", help="cluster name (default: EIPDASH_CLUSTER_NAME)")
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
        if options["cluster"]:
            cluster = Cluster.objects.filter(name=options["cluster"]).first()
            if cluster is None:
                raise CommandError(f"no cluster named {options['cluster']!r}", returncode=2)
        else:
            cluster = cluster_default()
        self.stdout.write(f"watching the nodes of cluster {cluster.name}", ending="\n")
        self.stdout.flush()
        watch_cluster(cluster, reconcile_spec.delay, stop_after=options["stop_after"],
                      heartbeat_file=options["heartbeat_file"], max_backoff=options["max_backoff"])
