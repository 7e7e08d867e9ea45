"""The cheap steady pass: DescribeInstances only for instances whose facts are new, changing or old; one
region-wide DescribeAddresses per tick shared by the specs of the region; the unmanaged EIPs recorded.

EC2 calls are counted with the adapter's eipdash_aws_calls_total counter; everything else is read back from
AWS (the EC2 emulator), Kubernetes (the API emulator) and the database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings

from pools.models import Assignment, ElasticIP, LaunchSpec, Node, UnmanagedAddress
from sandbox.aws_limits import LimitsProxy
from tests.fixtures.world import TAINT, World, kinds, reconcile
from workers import executor, observe, readings
from workers.ec2 import Address, Ec2, Instance, Permanent
from workers.kube import Kube
from workers.kube import Permanent as KubePermanent

REGION = "us-east-1"


def calls(action: str) -> float:
    return REGISTRY.get_sample_value("eipdash_aws_calls_total", {"action": action, "outcome": "ok"}) or 0.0


def steady(spec: LaunchSpec) -> None:
    """Passes until one has nothing to do: every node holds its EIP, and its row its marks."""
    for _ in range(3):
        report = executor.reconcile_spec(spec.pk)
        assert not report.errors, report.errors
        if not report.done:
            return
    raise AssertionError(f"not steady: {report.done}")


def checked_at(name: str) -> dt.datetime | None:
    return Node.objects.values_list("instance_checked_at", flat=True).get(name=name)


def test_a_steady_pass_describes_no_instance_and_a_new_node_one(world: World) -> None:
    spec = world.spec()
    world.eips(3)
    world.node("a")
    world.node("b")
    steady(spec)
    first_check = checked_at("a")
    assert first_check is not None

    described = calls("DescribeInstances")
    assert executor.reconcile_spec(spec.pk).done == []
    assert calls("DescribeInstances") == described  # the facts of a and b come from their rows
    assert checked_at("a") == first_check

    world.node("c")
    report = executor.reconcile_spec(spec.pk)
    assert not report.errors and world.eip_on("c") is not None
    assert world.taints("c") == []
    # Two calls, about the new instance only: its facts for the snapshot, and its slice's look right before
    # AssociateAddress (a node may outlive its instance).
    assert calls("DescribeInstances") == described + 2
    assert checked_at("a") == first_check and checked_at("c") is not None
    row = Node.objects.get(name="c")
    assert (row.eni_id, row.private_ip) == (world.nodes["c"].eni_id, world.nodes["c"].private_ip)


def test_a_fact_older_than_the_recheck_time_is_read_again(world: World, settings: Settings) -> None:
    settings.EIPDASH_INSTANCE_RECHECK_SECONDS = 300
    spec = world.spec()
    world.eips(2)
    world.node("a")
    world.node("b")
    steady(spec)
    # EC2 stops a's instance behind the pass's back: within the recheck time the row's "running" stands.
    world.ec2.client.stop_instances(InstanceIds=[world.nodes["a"].instance_id])
    described = calls("DescribeInstances")
    executor.reconcile_spec(spec.pk)
    assert calls("DescribeInstances") == described
    assert Node.objects.get(name="a").instance_state == "running"

    old = timezone.now() - dt.timedelta(seconds=301)
    Node.objects.filter(name="a").update(instance_checked_at=old)
    b_checked = checked_at("b")
    executor.reconcile_spec(spec.pk)
    assert calls("DescribeInstances") == described + 1
    row = Node.objects.get(name="a")
    assert row.instance_state in ("stopping", "stopped")
    assert row.instance_checked_at is not None and row.instance_checked_at > old
    assert checked_at("b") == b_checked  # b's fact was fresh: not asked about


def test_a_terminated_instance_whose_node_left_kubernetes_is_described(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    world.node("b")
    steady(spec)
    allocation = world.eip_on("a")
    assert allocation is not None
    world.ec2.terminate(world.nodes["a"].instance_id, drop_associations=False)
    world.kube.delete("nodes", "a")

    described = calls("DescribeInstances")
    report = executor.reconcile_spec(spec.pk)
    assert not report.errors
    assert calls("DescribeInstances") == described + 1
    row = Node.objects.get(name="a")
    assert row.deleted_at is not None and row.instance_state == "terminated"
    # Its EIP is back in the pool, and b kept its own.
    assert world.address(allocation).get("AssociationId") is None
    assert world.eip_on("b") is not None


def test_a_name_reused_by_another_instance_is_described(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("ip-10-0-0-9")
    steady(spec)
    old = world.nodes["ip-10-0-0-9"]
    world.ec2.terminate(old.instance_id)
    world.kube.delete("nodes", "ip-10-0-0-9")
    new = world.node("ip-10-0-0-9")  # the same name, a new instance, before any pass saw the old one go

    described = calls("DescribeInstances")
    executor.reconcile_spec(spec.pk)
    assert calls("DescribeInstances") == described + 1
    row = Node.objects.get(name="ip-10-0-0-9")
    assert (row.instance_id, row.eni_id, row.private_ip) == (new.instance_id, new.eni_id, new.private_ip)


# ---- one region-wide DescribeAddresses per tick


def three_specs(world: World) -> list[LaunchSpec]:
    specs = []
    for name in ("web", "api", "mail"):
        labels = {"eipdash.io/pool": name}
        specs.append(world.spec(name, labels=labels, tag_value=name))
        world.eips(2, {"eipdash/pool": name})
        world.node(f"{name}-1", labels=labels)
    return specs


def test_the_specs_of_a_region_share_one_address_reading_per_tick(world: World) -> None:
    specs = three_specs(world)
    for spec in specs:
        steady(spec)
    assert all(world.eip_on(f"{name}-1") for name in ("web", "api", "mail"))

    reads = calls("DescribeAddresses")
    for spec in specs:  # one beat tick: every spec's pass
        assert executor.reconcile_spec(spec.pk).done == []
    assert calls("DescribeAddresses") == reads + 1

    # The last spec's pass of the tick ended after every reading: its next pass reads again, and publishes
    # a reading that the first spec's next pass (its last one ended before) takes as it is.
    executor.reconcile_spec(specs[-1].pk)
    assert calls("DescribeAddresses") == reads + 2
    executor.reconcile_spec(specs[0].pk)
    assert calls("DescribeAddresses") == reads + 2


def test_a_shared_reading_still_serves_a_new_node(world: World) -> None:
    """A node that came after the reading gets its EIP from a pass on the shared reading: the executor
    checks the target again before it associates, and the DB claims keep one EIP per node."""
    specs = three_specs(world)
    for spec in specs:
        steady(spec)
    executor.reconcile_spec(specs[0].pk)  # a fresh reading, after the other specs' last passes
    reads = calls("DescribeAddresses")
    world.node("api-2", labels={"eipdash.io/pool": "api"})
    report = executor.reconcile_spec(specs[1].pk)
    assert not report.errors
    assert calls("DescribeAddresses") - reads <= 2  # the shared reading, plus at most targeted checks
    assert world.eip_on("api-2") is not None and world.eip_on("api-1") is not None
    assert world.eip_on("api-2") != world.eip_on("api-1")


def test_without_redis_the_reading_is_shared_within_the_process(world: World, settings: Settings) -> None:
    settings.REDIS_URL = None
    readings.forget()
    specs = three_specs(world)
    for spec in specs:
        steady(spec)
    reads = calls("DescribeAddresses")
    for spec in specs:
        assert executor.reconcile_spec(spec.pk).done == []
    assert calls("DescribeAddresses") == reads + 1
    readings.forget()


# ---- unmanaged EIPs


def test_unmanaged_addresses_are_recorded_and_leave_when_tagged_into_a_pool(world: World) -> None:
    spec = world.spec()
    pool = set(world.eips(2))
    decoys = world.eips(2, {"team": "search"}) + world.eips(1, {})
    world.node("a")
    steady(spec)
    assert set(UnmanagedAddress.objects.values_list("allocation_id", flat=True)) == set(decoys)
    assert set(ElasticIP.objects.filter(gone=False).values_list("allocation_id", flat=True)) == pool
    row = UnmanagedAddress.objects.get(allocation_id=decoys[0])
    assert row.region == "us-east-1" and row.tags == {"team": "search"}
    assert row.public_ip == world.address(decoys[0])["PublicIp"]

    # One decoy tagged into the pool, one released: the next reading moves the first, drops the second.
    world.ec2.client.create_tags(Resources=[decoys[0]], Tags=[{"Key": "eipdash/pool", "Value": "ingress"}])
    world.ec2.client.release_address(AllocationId=decoys[2])
    executor.reconcile_spec(spec.pk)
    assert set(UnmanagedAddress.objects.values_list("allocation_id", flat=True)) == {decoys[1]}
    assert ElasticIP.objects.get(allocation_id=decoys[0]).gone is False

    # Taken out of the pool again: back to unmanaged, and gone from the pool's rows.
    world.ec2.client.delete_tags(Resources=[decoys[0]], Tags=[{"Key": "eipdash/pool"}])
    executor.reconcile_spec(spec.pk)
    assert set(UnmanagedAddress.objects.values_list("allocation_id", flat=True)) == {decoys[0], decoys[1]}
    assert ElasticIP.objects.get(allocation_id=decoys[0]).gone is True


def test_an_unchanged_reading_rewrites_no_address_row(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.eips(1, {"team": "search"})
    world.node("a")
    steady(spec)
    executor.reconcile_spec(spec.pk)  # a fresh reading of an unchanged region
    seen = dict(UnmanagedAddress.objects.values_list("allocation_id", "last_seen_at"))
    with CaptureQueriesContext(connection) as queries:
        executor.reconcile_spec(spec.pk)
    written = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith(("INSERT", "DELETE")) and ("elasticip" in q["sql"] or "unmanaged" in q["sql"])]
    assert written == []
    # Only last_seen_at moved, in one UPDATE.
    after = dict(UnmanagedAddress.objects.values_list("allocation_id", "last_seen_at"))
    assert after.keys() == seen.keys() and all(after[k] > seen[k] for k in seen)


@pytest.fixture(autouse=True)
def _no_stale_readings() -> None:
    readings.forget()


def test_passes_running_at_once_wait_for_one_reading(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Single flight: while one pass of the region reads, the others wait for its reading (a Celery worker
    runs several passes at once). The reads go through a slow DescribeAddresses so that they overlap."""
    specs = three_specs(world)
    for spec in specs:
        steady(spec)
    real = Ec2.list_all_addresses
    started = threading.Barrier(len(specs), timeout=10)

    def slow(self: Ec2) -> list[Address]:
        time.sleep(0.5)  # the call in flight while the other passes arrive
        return real(self)

    monkeypatch.setattr(Ec2, "list_all_addresses", slow)
    reads = calls("DescribeAddresses")
    taken: list[readings.Reading] = []
    # Every pass ended one sequence number after the last reading: none published so far will do. (The
    # readers' threads have connections of their own, which do not see this test's uncommitted rows: the
    # number is given to them here.)
    ended = readings.selectors.region_seq_current(region="us-east-1") + 1
    monkeypatch.setattr(readings.selectors, "region_seq_current", lambda region: ended)
    numbers = itertools.count(1)  # the readings' numbers, likewise
    monkeypatch.setattr(readings.services, "region_reading_number", lambda region: next(numbers))

    def one() -> None:
        ec2 = Ec2("us-east-1")
        started.wait()
        taken.append(readings.region_addresses(ec2, at_least=ended, selection="s", save=lambda found, number: None))

    threads = [threading.Thread(target=one) for _ in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(taken) == 3 and calls("DescribeAddresses") == reads + 1
    assert sum(r.own for r in taken) == 1 and len({r.seq for r in taken}) == 1


class NoEniFor(Ec2):
    """DescribeInstances lists these instances without their network interfaces (yet)."""

    def __init__(self, instance_ids: set[str]) -> None:
        super().__init__(REGION)
        self.instance_ids = instance_ids

    def describe_instances(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        found = super().describe_instances(instance_ids)
        return {i: dataclasses.replace(inst, eni_id=None, private_ip=None) if i in self.instance_ids else inst
                for i, inst in found.items()}


def test_a_node_without_a_primary_ipv4_does_not_starve_a_servable_node(world: World) -> None:
    spec = world.spec()
    (only,) = world.eips(1)
    blind = world.node("blind")  # first by name, seen in the same pass
    world.node("ok")
    reconcile(spec, ec2=NoEniFor({blind.instance_id}))
    assert world.eip_on("ok") == only and TAINT in world.taints("blind")
    assert not kinds("pool_exhausted")  # the pool is not to blame
    (condition,) = kinds("error")
    assert condition.node == "blind" and "no primary private IPv4" in condition.reason
    reconcile(spec, ec2=NoEniFor({blind.instance_id}))
    assert len(kinds("error")) == 1  # one event per episode


class Unauthorized(Ec2):
    def list_all_addresses(self) -> list[Address]:
        raise Permanent("DescribeAddresses: UnauthorizedOperation: You are not authorized",
                        code="UnauthorizedOperation", operation="DescribeAddresses")


def test_a_failing_read_is_one_error_event_per_episode_and_keeps_the_last_successful_pass(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    spec.refresh_from_db()
    good = spec.last_successful_pass_at
    assert good is not None
    for _ in range(3):
        report = reconcile(spec, ec2=Unauthorized(REGION))
        assert report.errors and "UnauthorizedOperation" in report.errors[0]
    (failure,) = kinds("error")
    assert failure.launch_spec == "ingress" and "UnauthorizedOperation" in failure.reason
    spec.refresh_from_db()
    assert spec.last_successful_pass_at == good and spec.last_reconciled_at is not None
    assert spec.last_reconciled_at > good and observe.READ_ALERT in spec.active_alerts
    reconcile(spec)  # the episode ends
    spec.refresh_from_db()
    assert spec.last_successful_pass_at is not None and spec.last_successful_pass_at > good
    assert observe.READ_ALERT not in spec.active_alerts
    reconcile(spec, ec2=Unauthorized(REGION))
    assert len(kinds("error")) == 2  # a new episode


class InstancesUnauthorized(Ec2):
    def describe_instances(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        raise Permanent("DescribeInstances: UnauthorizedOperation: You are not authorized",
                        code="UnauthorizedOperation", operation="DescribeInstances")


def test_a_describe_instances_that_fails_in_its_thread_fails_the_read_like_one_made_in_the_pass(world: World) -> None:
    """New nodes are described in a thread beside the region's DescribeAddresses (refresh_snapshot): its error
    still ends the pass as a failed read, with nothing written for the nodes."""
    spec = world.spec()
    world.eips(1)
    world.node("a")
    report = reconcile(spec, ec2=InstancesUnauthorized(REGION))
    assert report.errors and "DescribeInstances: UnauthorizedOperation" in report.errors[0], report.errors
    assert not Node.objects.exists() and not Assignment.objects.exists()
    assert world.eip_on("a") is None and TAINT in world.taints("a")
    (failure,) = kinds("error")
    assert "UnauthorizedOperation" in failure.reason


def test_new_nodes_are_described_while_the_regions_addresses_are_read(
    world: World, ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst's new nodes: their DescribeInstances is in flight beside the region's DescribeAddresses (EC2 behind
    a proxy that answers after 500 ms sees both at once), not after it, and their rows get the facts."""
    spec = world.spec()
    world.eips(2)
    nodes = [world.node(name) for name in ("a", "b")]
    with LimitsProxy(ec2_emulator.endpoint_url, latency_ms=500) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)  # a client of its own, through the proxy
        ec2, kube = executor.clients_for(spec)
        pool = observe.refresh_snapshot(spec, ec2, kube)
        stats = proxy.stats()
    assert stats["calls"] == {"DescribeAddresses": 1, "DescribeInstances": 1}
    assert stats["max_in_flight"] == 2
    assert len(pool) == 2
    rows = {row.name: row for row in Node.objects.all()}
    assert {name: (row.eni_id, row.private_ip, row.instance_state) for name, row in rows.items()} == {
        n.name: (n.eni_id, n.private_ip, "running") for n in nodes}


class PodsForbidden(Kube):
    def workload_pod_count(self, node_name: str) -> int:
        raise KubePermanent('403: pods is forbidden: User "eipdash" cannot list resource "pods"')


def test_a_403_on_pods_keeps_the_eip_is_recorded_once_and_other_nodes_are_served(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    reconcile(spec)
    held = world.eip_on("a")
    world.pod("web", "a")
    world.cordon("a")
    world.kube.delete("pods", "web", "default")  # drained, but the count cannot be read
    world.node("b")
    forbidden = PodsForbidden()
    for _ in range(2):
        report = reconcile(spec, kube=forbidden)
        assert any("403" in e for e in report.errors), report.lines()
    assert world.eip_on("a") == held  # not counted: kept (I2)
    assert world.eip_on("b") is not None
    (failure,) = kinds("error")
    assert "pods is forbidden" in failure.reason
    spec.refresh_from_db()
    assert spec.last_successful_pass_at is not None and spec.last_reconciled_at is not None
    assert spec.last_reconciled_at > spec.last_successful_pass_at


def test_a_reused_node_name_never_inherits_the_old_instances_eni(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    old = world.node("ip-10-0-0-1")
    reconcile(spec)
    world.ec2.terminate(old.instance_id)  # AWS drops the association; the ENI lingers a moment
    world.kube.delete("nodes", "ip-10-0-0-1")
    new = world.node("ip-10-0-0-1")  # same name, new instance, before any pass saw the old one go
    lagging = NoEniFor({new.instance_id})
    reconcile(spec, ec2=lagging)
    reconcile(spec, ec2=lagging)
    assert old.eni_id not in world.all_associations().values()
    row = Node.objects.get(name="ip-10-0-0-1")
    assert row.instance_id == new.instance_id and row.eni_id == "" and row.private_ip == ""
    assert TAINT in world.taints("ip-10-0-0-1")
    reconcile(spec)  # DescribeInstances catches up
    assert world.eip_on("ip-10-0-0-1") is not None


def test_a_node_listed_not_ready_is_described_whatever_its_row_says(world: World) -> None:
    """A spot interruption: the instance is terminated at once, but its Node object stays listed, NotReady and
    tainted unreachable by the node controller, until the cloud controller or Karpenter deletes it. Its row
    still says "running" (facts a few seconds old): the pass asks EC2 again, and the dead node, the oldest
    waiting, takes no free EIP's turn."""
    spec = world.spec()
    dead = world.node("dead")
    reconcile(spec)
    world.node("live")
    reconcile(spec)  # both wait: the pool is empty
    world.ec2.terminate(dead.instance_id, drop_associations=False)
    world.kube.patch("nodes", "dead", {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
                     subresource="status")
    world.kube.patch("nodes", "dead", {"spec": {"taints": [
        {"key": TAINT, "value": "true", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}})
    (eip,) = world.eips(1)
    reconcile(spec)
    assert world.eip_on("live") == eip  # in this very pass
    assert Node.objects.get(name="dead").instance_state == "terminated"
    assert not Assignment.objects.filter(node__name="dead").exists()
