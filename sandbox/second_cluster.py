"""The sandbox's second cluster (`manage.py sandbox --clusters 2`, `make run RUN_ARGS="--clusters 2"`).

A second Kubernetes API emulator on a free loopback port, with its own kubeconfig file; the cluster row
`sandbox-eu` (eu-west-1) added with `manage.py cluster add --kubeconfig`, as an admin would; its launch spec
applied from `sandbox/specs/eu/`, its pool allocated in eu-west-1 (the one moto server serves every region),
and a simulation of its own. eipdash serves it from the same database, Redis, worker, beat and watch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

from django.core.management import call_command

from .ec2_emulator import Ec2World
from .kube_emulator import KubeEmulator
from .seed import SECOND_CLUSTER, SECOND_REGION, SeedResult, second_specs, seed_second_cluster
from .simulate import KubeHttp, Pace, Simulation

# What the env file tells a shell (and the banner) about the second cluster.
KUBECONFIG_ENV = "SANDBOX_SECOND_KUBECONFIG"
CLUSTER_ENV = "SANDBOX_SECOND_CLUSTER"


def add_cluster(kubeconfig: Path) -> None:
    """`manage.py cluster add` once; with --keep-db the row is already there (same kubeconfig path)."""
    from pools.models import Cluster

    if Cluster.objects.filter(name=SECOND_CLUSTER).exists():
        return
    call_command("cluster", "add", SECOND_CLUSTER, "--region", SECOND_REGION, "--kubeconfig", str(kubeconfig),
                 stdout=StringIO())


@dataclass
class SecondCluster:
    kube: KubeEmulator
    kubeconfig: Path
    simulation: Simulation
    seeded: SeedResult | None
    thread: threading.Thread | None = None

    @classmethod
    def start(cls, *, ec2_endpoint: str, kubeconfig: Path, seed: int, pace: Pace, populate: bool) -> SecondCluster:
        kube = KubeEmulator(None).start()
        try:
            kube.write_kubeconfig(str(kubeconfig))
            # Another seed than the first cluster's: its autoscaler makes decisions of its own.
            simulation = Simulation(ec2=Ec2World(ec2_endpoint, SECOND_REGION), kube=KubeHttp(kube.url),
                                    specs=second_specs(), seed=seed + 1, pace=pace)
            seeded = None
            if populate:
                seeded = seed_second_cluster(
                    simulation=simulation,
                    add_cluster=lambda: add_cluster(kubeconfig),
                    apply_spec=lambda path: call_command("launchspec", "apply", "-f", str(path), stdout=StringIO()),
                )
        except BaseException:
            kube.stop()
            raise
        return cls(kube=kube, kubeconfig=kubeconfig, simulation=simulation, seeded=seeded)

    def describe(self) -> str:
        seeded = ""
        if self.seeded is not None:
            pools = ", ".join(f"{name}: {len(eips)} EIPs" for name, eips in self.seeded.pools.items())
            seeded = f", seeded {len(self.seeded.specs)} launch spec ({pools}), {len(self.seeded.nodes)} node(s)"
        return (f"second cluster {SECOND_CLUSTER} ({SECOND_REGION}): Kubernetes {self.kube.url}, "
                f"kubeconfig {self.kubeconfig}{seeded}")

    def env(self) -> dict[str, str]:
        return {CLUSTER_ENV: f"{SECOND_CLUSTER}:{SECOND_REGION}", KUBECONFIG_ENV: str(self.kubeconfig)}

    def run_in_background(self, stop: threading.Event, duration: float | None) -> None:
        self.thread = threading.Thread(target=self.simulation.run, args=(stop, duration), daemon=True,
                                       name="simulation-2")
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.kube.stop()
