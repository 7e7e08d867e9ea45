"""Two clusters in two regions from one install: two Kubernetes emulators, one EC2 emulator (moto serves every
region), a spec in each cluster, and a node name that exists in BOTH clusters (different instances).

Asserts on AWS (each region's EIP on the right ENI), on both Kubernetes emulators (taints, labels), on the
record (two Node rows, claims apart) and on the invariant checker (clean for both).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from pools import services
from pools.keys import EIP_LABEL, STARTUP_TAINT_KEY
from pools.models import Assignment, LaunchSpec, Node
from pools.specfile import parse_launch_spec
from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.kube_emulator import KubeEmulator, node_manifest
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from workers import executor, invariants

pytestmark = pytest.mark.e2e

SHARED_NAME = "ip-10-0-0-10.ec2.internal"  # the same node name in both clusters
LABELS = {"eipdash.io/pool": "edge"}
TAINTED = [{"key": STARTUP_TAINT_KEY, "value": "true", "effect": "NoSchedule"}]


@pytest.fixture(scope="module")
def _second_kube_server() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def second_kube(_second_kube_server: KubeEmulator) -> KubeEmulator:
    _second_kube_server.reset()
    return _second_kube_server


@dataclass
class Side:
    """One cluster of the test: its Kubernetes emulator, its region's EC2 view, its spec."""

    cluster: str
    region: str
    az: str
    kube: KubeEmulator
    ec2: Ec2World
    spec: LaunchSpec | None = None

    def node(self, name: str) -> tuple[str, str, str]:
        instance_id, eni_id, private_ip = self.ec2.launch_instance(az=self.az)
        self.kube.create("nodes", node_manifest(name, instance_id, self.az, LABELS, TAINTED))
        return instance_id, eni_id, private_ip

    def eips(self, count: int) -> list[str]:
        return [self.ec2.allocate_eip({"eipdash/pool": self.cluster})[0] for _ in range(count)]

    def on_eni(self, eni_id: str) -> list[str]:
        found = self.ec2.client.describe_addresses(Filters=[{"Name": "network-interface-id", "Values": [eni_id]}])
        return [a["AllocationId"] for a in found["Addresses"] if a.get("AssociationId")]

    def taints(self, name: str) -> list[str]:
        return [t["key"] for t in self.kube.get("nodes", name)["spec"].get("taints") or []]

    def label(self, name: str) -> str | None:
        labels: dict[str, Any] = self.kube.get("nodes", name)["metadata"].get("labels") or {}
        return labels.get(EIP_LABEL)


def make_sides(ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator, second_kube: KubeEmulator,
               tmp_path: Path) -> tuple[Side, Side]:
    """Clusters `us` (us-east-1, first emulator) and `eu` (eu-west-1, second), each with its own kubeconfig
    file, added the way an admin adds them; a spec in each applied from one folder."""
    us = Side("us", "us-east-1", "us-east-1a", kube_emulator, Ec2World(ec2_emulator.endpoint_url, "us-east-1"))
    eu = Side("eu", "eu-west-1", "eu-west-1a", second_kube, Ec2World(ec2_emulator.endpoint_url, "eu-west-1"))
    for side in (us, eu):
        kubeconfig = side.kube.write_kubeconfig(tmp_path / f"kubeconfig-{side.cluster}")
        call_command("cluster", "add", side.cluster, "--region", side.region, "--kubeconfig", str(kubeconfig),
                     stdout=StringIO())
        data = parse_launch_spec({
            "name": f"edge-{side.cluster}", "cluster": side.cluster, "region": side.region,
            "labels": [{"key": k, "value": v} for k, v in LABELS.items()],
            "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": side.cluster}},
        })
        side.spec, _ = services.launch_spec_apply(data=data)
    return us, eu


def assert_served(us: Side, eu: Side, us_node: tuple[str, str, str], eu_node: tuple[str, str, str],
                  us_eip: str, eu_eip: str) -> None:
    # AWS: each region's EIP on its own cluster's node, nothing crossed.
    assert us.on_eni(us_node[1]) == [us_eip]
    assert eu.on_eni(eu_node[1]) == [eu_eip]
    # Kubernetes: the shared name is served in both clusters, each labelled with its own region's IP.
    us_ip = us.ec2.address(us_eip)["PublicIp"]
    eu_ip = eu.ec2.address(eu_eip)["PublicIp"]
    assert STARTUP_TAINT_KEY not in us.taints(SHARED_NAME) and us.label(SHARED_NAME) == us_ip
    assert STARTUP_TAINT_KEY not in eu.taints(SHARED_NAME) and eu.label(SHARED_NAME) == eu_ip
    # The record: two Node rows of the name, one per cluster, each with its own instance and claim.
    rows = {n.cluster.name: n for n in Node.objects.filter(name=SHARED_NAME).select_related("cluster")}
    assert set(rows) == {"us", "eu"}
    assert rows["us"].instance_id == us_node[0] and rows["eu"].instance_id == eu_node[0]
    claims = {c.node.cluster.name: c for c in Assignment.objects.filter(closed_at__isnull=True)
              .select_related("node__cluster", "eip", "launch_spec")}
    assert set(claims) == {"us", "eu"}
    assert (claims["us"].eip.allocation_id, claims["us"].launch_spec_id) == (us_eip, us.spec and us.spec.pk)
    assert (claims["eu"].eip.allocation_id, claims["eu"].launch_spec_id) == (eu_eip, eu.spec and eu.spec.pk)
    assert claims["us"].eip.region == "us-east-1" and claims["eu"].eip.region == "eu-west-1"


def test_two_clusters_in_two_regions_with_a_shared_node_name(
    ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator, second_kube: KubeEmulator, kube_env: Path,
    tmp_path: Path, db: None,
) -> None:
    us, eu = make_sides(ec2_emulator, kube_emulator, second_kube, tmp_path)
    assert us.spec is not None and eu.spec is not None
    (us_eip,) = us.eips(1)
    (eu_eip,) = eu.eips(1)
    us_node = us.node(SHARED_NAME)
    eu_node = eu.node(SHARED_NAME)
    assert us_node[0] != eu_node[0]

    for spec in (us.spec, eu.spec):
        report = executor.reconcile_spec(spec.pk)
        assert not report.errors, report.lines()
    assert_served(us, eu, us_node, eu_node, us_eip, eu_eip)
    assert invariants.observe().violations == []

    # A second pass of each changes nothing: neither cluster's node is mistaken for the other's.
    claims = list(Assignment.objects.values_list("pk", flat=True))
    for spec in (us.spec, eu.spec):
        assert not executor.reconcile_spec(spec.pk).errors
    assert list(Assignment.objects.values_list("pk", flat=True)) == claims
    assert_served(us, eu, us_node, eu_node, us_eip, eu_eip)

    # The node leaves the us cluster only: its EIP comes back to the us pool; the eu node keeps its EIP.
    us.kube.delete("nodes", SHARED_NAME)
    us.ec2.terminate(us_node[0])
    for spec in (us.spec, eu.spec):
        executor.reconcile_spec(spec.pk)
    assert us.on_eni(us_node[1]) == [] and eu.on_eni(eu_node[1]) == [eu_eip]
    assert eu.label(SHARED_NAME) == eu.ec2.address(eu_eip)["PublicIp"]
    open_claims = list(Assignment.objects.filter(closed_at__isnull=True).select_related("node__cluster"))
    assert [(c.node.cluster.name, c.node.name) for c in open_claims] == [("eu", SHARED_NAME)]
    assert Node.objects.get(cluster__name="us", name=SHARED_NAME).deleted_at is not None
    assert Node.objects.get(cluster__name="eu", name=SHARED_NAME).deleted_at is None
    assert invariants.observe().violations == []


def test_two_clusters_served_by_a_real_worker_and_watch(
    redis_url: str, ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator, second_kube: KubeEmulator,
    kube_env: Path, tmp_path: Path, transactional_db: None,
) -> None:
    """The watch runs one stream per cluster: a node that joins either cluster gets a pass on the worker,
    with no beat and no pass enqueued by the test."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    stack = Stack(redis_url, tmp_path)
    try:
        us, eu = make_sides(ec2_emulator, kube_emulator, second_kube, tmp_path)
        assert us.spec is not None and eu.spec is not None
        (us_eip,) = us.eips(1)
        (eu_eip,) = eu.eips(1)
        stack.worker()
        stack.watch()
        watch_log = tmp_path / "watch.log"
        eventually(lambda: all(f"watching the nodes of cluster {name}" in watch_log.read_text(errors="replace")
                               for name in ("us", "eu")),
                   timeout=60, stack=stack, what="the watch streams both clusters")
        us_node = us.node(SHARED_NAME)
        eu_node = eu.node(SHARED_NAME)
        eventually(lambda: Assignment.objects.filter(closed_at__isnull=True, confirmed_at__isnull=False).count() == 2
                   and STARTUP_TAINT_KEY not in us.taints(SHARED_NAME)
                   and STARTUP_TAINT_KEY not in eu.taints(SHARED_NAME),
                   timeout=60, stack=stack, what="both clusters' nodes served through the watch and the worker")
        assert_served(us, eu, us_node, eu_node, us_eip, eu_eip)
        assert invariants.observe().violations == []
    finally:
        stack.stop()


def test_the_checker_keeps_findings_on_a_shared_node_name_apart(
    ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator, second_kube: KubeEmulator, kube_env: Path,
    tmp_path: Path, db: None,
) -> None:
    """The same finding on the same node name in two clusters is two findings, not one under one key."""
    us, eu = make_sides(ec2_emulator, kube_emulator, second_kube, tmp_path)
    for side in (us, eu):
        side.node(SHARED_NAME)
        side.kube.patch("nodes", SHARED_NAME, {"metadata": {"labels": {EIP_LABEL: "198.51.100.7"}}})
    found = [v for v in invariants.observe().violations if v.key.startswith("I4:label:")]
    assert len(found) == 2
    assert len(invariants.unique(found)) == 2
