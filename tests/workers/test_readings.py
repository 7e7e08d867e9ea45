"""The shared DescribeAddresses reading (workers/readings.py) is ordered by the region's sequence, never by the
clocks of two hosts: a reading taken before a spec's last change to AWS never serves that spec, whoever took
it and whatever that host's clock said. Passes against both emulators; assertions read AWS and Kubernetes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from tests.fixtures.world import TAINT, World, reconcile
from workers.ec2 import Ec2

REGION = "us-east-1"


def never_schedulable_without_its_eip(world: World, node: str) -> bool:
    """I1 for one node: it carries the startup taint, or it holds a pool EIP."""
    return TAINT in world.taints(node) or world.eip_on(node) is not None


class KilledAfterDisassociate(Ec2):
    """The real adapter; the process dies (SIGKILL) right after AWS carried out a DisassociateAddress, before
    the pass closed the claim or wrote anything else."""

    def disassociate(self, association_id: str) -> None:
        super().disassociate(association_id)
        raise SystemExit(9)


def test_a_reading_taken_before_a_killed_pass_released_is_not_fresh(world: World) -> None:
    spec = world.spec()
    (eip,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.cordon("a")  # a drains: the next pass re-taints it and takes its EIP back, then dies
    with pytest.raises(SystemExit):
        reconcile(spec, ec2=KilledAfterDisassociate(REGION))
    assert world.eip_on("a") is None and TAINT in world.taints("a")
    world.uncordon("a")  # the drain is called off
    reconcile(spec)
    assert never_schedulable_without_its_eip(world, "a")
    reconcile(spec)
    assert world.eip_on("a") == eip and TAINT not in world.taints("a")


def test_a_reader_whose_clock_runs_ahead_does_not_make_an_old_reading_fresh(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = world.spec()
    other = world.spec("other", labels={"eipdash.io/pool": "other"}, tag_value="other")
    (eip,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    assert world.eip_on("a") == eip
    real_now = timezone.now

    def ahead() -> Any:
        return real_now() + dt.timedelta(seconds=30)

    with monkeypatch.context() as skewed:
        skewed.setattr(timezone, "now", ahead)  # the other spec's worker runs on a host 30 s ahead
        reconcile(other)  # its reading shows eip on a, stamped 30 s in the future
    world.cordon("a")
    reconcile(spec)  # a drained: its EIP goes back to the pool
    assert world.eip_on("a") is None
    world.uncordon("a")  # the drain is called off
    reconcile(spec)
    assert never_schedulable_without_its_eip(world, "a")
    reconcile(spec)
    assert world.eip_on("a") == eip and TAINT not in world.taints("a")


def test_a_shared_reading_keeps_each_address_whole_through_redis() -> None:
    """A pass that reuses another's reading must save the same columns as a fresh read: a column dropped on the
    way through Redis (PublicIpv4Pool) would blank the stored value until the next fresh reading."""
    from workers.ec2 import Address
    from workers.readings import Reading, _decode, _encode

    address = Address(allocation_id="eipalloc-1", public_ip="203.0.113.1", tags={"pool": "web"},
                      association_id="eipassoc-1", eni_id="eni-1", private_ip="10.0.0.1", instance_id="i-1",
                      public_ipv4_pool="ipv4pool-ec2-0123")
    again = _decode(_encode(Reading(7, [address], "specs-1")))
    assert (again.seq, again.addresses, again.saved_for) == (7, [address], "specs-1")
    assert again.addresses[0].public_ipv4_pool == "ipv4pool-ec2-0123"
