"""Counters where things happen: the EC2 adapter by outcome, and time to EIP once per node (this process's
registry; the multiprocess path is covered on the running stack in tests/e2e/test_operations.py)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.fixtures.world import World
from workers import executor
from workers.ec2 import Ec2


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ec2_calls_are_counted_by_outcome(world: World) -> None:
    ok = value("eipdash_aws_calls_total", action="DescribeAddresses", outcome="ok")
    missing = value("eipdash_aws_calls_total", action="DescribeAddresses", outcome="notfound")
    ec2 = Ec2("us-east-1")
    ec2.list_all_addresses()
    assert ec2.get_address("eipalloc-0123456789abcdef0") is None  # AWS: InvalidAllocationID.NotFound
    assert value("eipdash_aws_calls_total", action="DescribeAddresses", outcome="ok") == ok + 1
    assert value("eipdash_aws_calls_total", action="DescribeAddresses", outcome="notfound") == missing + 1


def test_time_to_eip_is_observed_once_per_node(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    world.node("b")
    before = value("eipdash_time_to_eip_seconds_count")
    passes = value("eipdash_kube_calls_total", verb="list", outcome="ok")
    assert not executor.reconcile_spec(spec.pk).errors
    assert value("eipdash_time_to_eip_seconds_count") == before + 2
    # A second pass finds both ready: nothing more to observe, but it did read the nodes again.
    assert not executor.reconcile_spec(spec.pk).errors
    assert value("eipdash_time_to_eip_seconds_count") == before + 2
    assert value("eipdash_kube_calls_total", verb="list", outcome="ok") > passes
