"""The region's facts read from the EC2 emulator (moto's server) into RegionFacts: the egress path of a public and
a private subnet, the EIP quota, the once-per-window turn judged by the database's clock, and reads that fail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now
from pytest_django.fixtures import Settings

from pools.egress import VIA_IGW, VIA_NAT, VIA_NONE, VIA_UNKNOWN, egress_of
from pools.models import RegionFacts
from sandbox.ec2_emulator import Ec2World
from tests.fixtures.ec2 import CannedServer, ErrorServer
from tests.fixtures.world import World
from workers import executor
from workers.ec2 import QUOTA_FROM_ACCOUNT_ATTRIBUTE, Ec2
from workers.region_facts import refresh_region_facts

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
MOTO_EIP_QUOTA = 5  # moto's vpc-max-elastic-ips


def build_vpc(world: Ec2World) -> dict[str, str]:
    """A VPC with a public subnet (its own table: 0.0.0.0/0 to the internet gateway) and a private one (the main
    table: 0.0.0.0/0 to a NAT gateway in the public subnet)."""
    c = world.client
    vpc = c.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    public = c.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]["SubnetId"]
    private = c.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    igw = c.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    c.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_table = c.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    c.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    c.associate_route_table(RouteTableId=public_table, SubnetId=public)
    allocation = c.allocate_address(Domain="vpc")
    nat = c.create_nat_gateway(SubnetId=public, AllocationId=allocation["AllocationId"])["NatGateway"]["NatGatewayId"]
    main = c.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                            {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    c.create_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    return {"public": public, "private": private, "igw": igw, "nat": nat, "nat_ip": allocation["PublicIp"],
            "public_table": public_table}


def facts() -> RegionFacts:
    return RegionFacts.objects.get(region=REGION)


def age(seconds: int) -> None:
    """The facts were read `seconds` ago, by the database's clock."""
    then = ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())
    RegionFacts.objects.filter(region=REGION).update(quota_read_at=then, egress_read_at=then)


def test_egress_and_quota_are_read_into_the_regions_facts(ec2_world: Ec2World) -> None:
    vpc = build_vpc(ec2_world)
    refresh_region_facts(REGION, Ec2(REGION))
    row = facts()
    public, private = egress_of(row.egress, vpc["public"]), egress_of(row.egress, vpc["private"])
    assert (public.via, public.target) == (VIA_IGW, vpc["igw"])
    assert public.uses_eip
    assert (private.via, private.target, private.address) == (VIA_NAT, vpc["nat"], vpc["nat_ip"])
    assert not private.uses_eip
    # The emulator's endpoint is EC2's alone: EC2's account attribute says the quota.
    assert (row.eip_quota, row.eip_quota_source, row.quota_error) == (MOTO_EIP_QUOTA, QUOTA_FROM_ACCOUNT_ATTRIBUTE, "")
    assert row.egress_error == ""
    assert row.quota_read_at is not None and row.egress_read_at is not None


def test_one_read_per_window_by_the_databases_clock(ec2_world: Ec2World, settings: Settings) -> None:
    settings.EIPDASH_REGION_FACTS_SECONDS = 300
    vpc = build_vpc(ec2_world)
    refresh_region_facts(REGION, Ec2(REGION))
    assert egress_of(facts().egress, vpc["public"]).via == VIA_IGW
    # The public subnet loses its internet route: a refresh within the window does not read again.
    ec2_world.client.delete_route(RouteTableId=vpc["public_table"], DestinationCidrBlock="0.0.0.0/0")
    refresh_region_facts(REGION, Ec2(REGION))
    assert egress_of(facts().egress, vpc["public"]).via == VIA_IGW
    age(299)
    refresh_region_facts(REGION, Ec2(REGION))
    assert egress_of(facts().egress, vpc["public"]).via == VIA_IGW
    # Once the window has passed on the database's clock, the next caller reads again.
    age(301)
    refresh_region_facts(REGION, Ec2(REGION))
    assert egress_of(facts().egress, vpc["public"]).via == VIA_NONE


@pytest.fixture
def denied(ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[CannedServer]:
    # Refused as AWS refuses a caller without the permission.
    with ErrorServer(403, "UnauthorizedOperation") as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", server.url)
        yield server


def test_reads_that_fail_store_their_errors_and_no_guessed_quota(denied: CannedServer) -> None:
    # A good read first: the quota must not stand as if it were current; the subnets' map stays beside its
    # error (routes rarely change: dropping it would end every egress alert, and start it again next time).
    by_subnet = {"subnet-1": {"via": VIA_IGW, "target": "igw-1", "address": ""}}
    RegionFacts.objects.create(region=REGION, eip_quota=5, eip_quota_source=QUOTA_FROM_ACCOUNT_ATTRIBUTE,
                               egress=by_subnet)
    refresh_region_facts(REGION, Ec2(REGION))  # never raises
    row = facts()
    assert row.eip_quota is None and row.eip_quota_source == ""
    assert "UnauthorizedOperation" in row.quota_error
    assert row.egress == by_subnet and "UnauthorizedOperation" in row.egress_error
    assert row.quota_read_at is not None and row.egress_read_at is not None


def test_a_pass_reads_its_regions_facts(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    node = world.node("a")
    assert not executor.reconcile_spec(spec.pk).errors
    subnet = world.ec2.client.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]["Instances"][0][
        "SubnetId"]
    row = facts()
    assert row.eip_quota == MOTO_EIP_QUOTA
    assert egress_of(row.egress, subnet).via != VIA_UNKNOWN  # the node's subnet was read


def test_a_reader_that_froze_past_the_window_writes_nothing_over_newer_facts(
        ec2_world: Ec2World, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A claims the turn and freezes; the window passes; worker B claims, reads and writes. A, waking with
    what it read long ago, must not write it over B's (and stamp it fresh for another window)."""
    from workers import region_facts

    settings.EIPDASH_REGION_FACTS_SECONDS = 30
    a_turn = region_facts._claim(REGION)
    assert a_turn is not None
    RegionFacts.objects.filter(region=REGION).update(quota_read_at=Now() - timedelta(minutes=5),
                                                     egress_read_at=Now() - timedelta(minutes=5))
    refresh_region_facts(REGION, Ec2(REGION))  # B
    assert facts().eip_quota == MOTO_EIP_QUOTA

    class LongAgo:
        """What AWS told A before it froze."""

        region = REGION

        def eip_quota(self) -> tuple[int, str]:
            return 1, QUOTA_FROM_ACCOUNT_ATTRIBUTE

        def describe_subnets(self) -> list[Any]:
            return []

        def describe_route_tables(self) -> list[Any]:
            return []

        def describe_nat_gateways(self) -> list[Any]:
            return []

    monkeypatch.setattr(region_facts, "_claim", lambda region: a_turn)  # A is past its claim already
    refresh_region_facts(REGION, LongAgo())  # type: ignore[arg-type]
    assert facts().eip_quota == MOTO_EIP_QUOTA
