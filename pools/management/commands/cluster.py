"""`manage.py cluster add|list`: clusters are an admin's decision, never a side effect of a launch spec.

Whoever can run manage.py holds the database credentials, so this is an admin's tool like /admin/.
"""

from __future__ import annotations

from argparse import ArgumentParser
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools import services
from pools.models import Cluster


class Command(BaseCommand):
    help = "Add or list clusters (a name, its AWS region and its kubeconfig context)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add a cluster")
        add.add_argument("name")
        add.add_argument("--region", required=True, help="its AWS region, e.g. eu-west-1")
        add.add_argument("--kube-context", default="", help="its kubeconfig context; empty: the current one")
        sub.add_parser("list", help="list clusters; rows that share a kube context are flagged OVERLAP")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "add":
            try:
                cluster = services.cluster_create(
                    name=options["name"], region=options["region"], kube_context=options["kube_context"]
                )
            except services.ClusterError as exc:
                raise CommandError(f"refused: {exc}", returncode=2) from None
            self.stdout.write(f"added cluster {cluster.name} ({cluster.region}, "
                              f"context {cluster.kube_context or '(current)'})")
            return
        clusters = list(Cluster.objects.all())
        # Rows made before overlaps were refused can still share a context: say so, loudly.
        shared = Counter(cluster.kube_context for cluster in clusters)
        for cluster in clusters:
            flag = "\tOVERLAP: another cluster uses this kube context" if shared[cluster.kube_context] > 1 else ""
            self.stdout.write(f"{cluster.name}\t{cluster.region}\t{cluster.kube_context or '(current)'}{flag}")
