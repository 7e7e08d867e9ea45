"""`manage.py cluster add|list`: clusters are an admin's decision, never a side effect of a launch spec.

Whoever can run manage.py holds the database credentials, so this is an admin's tool like /admin/.
"""

from __future__ import annotations

import os
from argparse import ArgumentParser
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pools import kubeconfigs, services
from pools.management.cli import cli_actor
from pools.models import Cluster


class Command(BaseCommand):
    help = "Add or list clusters (a name, its AWS region, its kube context and/or its kubeconfig file)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add a cluster")
        add.add_argument("name")
        add.add_argument("--region", required=True, help="its AWS region, e.g. eu-west-1")
        add.add_argument("--context", "--kube-context", dest="kube_context", default="",
                         help="its kubeconfig context; empty: the kubeconfig's current one")
        add.add_argument("--kubeconfig", default="",
                         help="a kubeconfig file for this cluster; empty: KUBECONFIG, ~/.kube/config or in-cluster")
        sub.add_parser("list", help="list clusters; rows that share a kube context are flagged OVERLAP")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "add":
            try:
                kubeconfig = options["kubeconfig"]
                # Absolute: the workers do not run in the admin's working directory.
                path = os.path.abspath(kubeconfig) if kubeconfig else ""
                _check_context(options["name"], options["region"], options["kube_context"], path)
                cluster = services.cluster_create(
                    name=options["name"], region=options["region"], kube_context=options["kube_context"],
                    kubeconfig=path, actor=cli_actor(),
                )
            except services.ClusterError as exc:
                raise CommandError(f"refused: {exc}", returncode=2) from None
            where = f", kubeconfig {cluster.kubeconfig}" if cluster.kubeconfig else ""
            self.stdout.write(f"added cluster {cluster.name} ({cluster.region}, "
                              f"context {cluster.kube_context or '(current)'}{where})")
            return
        clusters = list(Cluster.objects.all())
        # Rows made before overlaps were refused can still share a context: say so, loudly.
        shared = Counter(_identity(cluster) for cluster in clusters)
        self.stdout.write("NAME\tREGION\tCONTEXT\tKUBECONFIG")
        for cluster in clusters:
            overlap = shared[_identity(cluster)] > 1
            flag = "\tOVERLAP: another cluster uses this kube context" if overlap else ""
            self.stdout.write(f"{cluster.name}\t{cluster.region}\t{cluster.kube_context or '(current)'}\t"
                              f"{cluster.kubeconfig or '(default)'}{flag}")


def _check_context(name: str, region: str, kube_context: str, kubeconfig: str) -> None:
    """The file is read as the workers will read it: the context the row selects must be in it. Refused with
    every other problem of the row too, as the admin form says them."""
    if problem := kubeconfigs.context_problem(kubeconfig, kube_context):
        problems = services.cluster_problems(name=name, region=region, kube_context=kube_context, kubeconfig=kubeconfig)
        raise services.ClusterError("; ".join([*problems, problem]))


def _identity(cluster: Cluster) -> tuple[str, str]:
    """A kube context of a kubeconfig file, by the file's real path (a symlink is the same file)."""
    return cluster.kube_context, services.kubeconfig_identity(cluster.kubeconfig)
