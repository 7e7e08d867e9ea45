"""Where a subnet's default route leaves, from the raw shapes of DescribeSubnets, DescribeRouteTables and
DescribeNatGateways (pure: no database, no emulator)."""

from __future__ import annotations

import json
from typing import Any

from pools.egress import VIA_IGW, VIA_NAT, VIA_NONE, VIA_UNKNOWN, Egress, egress_by_subnet, egress_of

VPC = "vpc-1"


def subnet(subnet_id: str, vpc_id: str = VPC) -> dict[str, Any]:
    return {"SubnetId": subnet_id, "VpcId": vpc_id, "State": "available"}


def table(table_id: str, *, routes: list[dict[str, Any]], subnets: tuple[str, ...] = (), main: bool = False,
          vpc_id: str = VPC) -> dict[str, Any]:
    associations: list[dict[str, Any]] = [
        {"Main": False, "SubnetId": s, "RouteTableId": table_id, "AssociationState": {"State": "associated"}}
        for s in subnets]
    if main:
        associations.append({"Main": True, "RouteTableId": table_id, "AssociationState": {"State": "associated"}})
    local = {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}
    return {"RouteTableId": table_id, "VpcId": vpc_id, "Associations": associations, "Routes": [local, *routes]}


def default_route(**target: str) -> dict[str, Any]:
    return {"DestinationCidrBlock": "0.0.0.0/0", "State": "active", **target}


def nat(nat_id: str, *addresses: dict[str, Any]) -> dict[str, Any]:
    return {"NatGatewayId": nat_id, "State": "available", "NatGatewayAddresses": list(addresses)}


def test_an_explicitly_associated_table_decides_over_the_main_one() -> None:
    by_subnet = egress_by_subnet(
        [subnet("subnet-public"), subnet("subnet-other")],
        [table("rtb-main", routes=[default_route(NatGatewayId="nat-1")], main=True),
         table("rtb-public", routes=[default_route(GatewayId="igw-1")], subnets=("subnet-public",))],
        [nat("nat-1", {"PublicIp": "203.0.113.5", "AllocationId": "eipalloc-1"})],
    )
    assert egress_of(by_subnet, "subnet-public") == Egress(VIA_IGW, "igw-1")
    # Not associated with any table: its VPC's main table routes it.
    assert egress_of(by_subnet, "subnet-other") == Egress(VIA_NAT, "nat-1", "203.0.113.5")
    assert json.loads(json.dumps(by_subnet)) == by_subnet  # stored as JSON (RegionFacts.egress)


def test_the_main_table_is_the_subnets_own_vpcs() -> None:
    by_subnet = egress_by_subnet(
        [subnet("subnet-a", "vpc-a"), subnet("subnet-b", "vpc-b")],
        [table("rtb-a", routes=[default_route(GatewayId="igw-a")], main=True, vpc_id="vpc-a"),
         table("rtb-b", routes=[], main=True, vpc_id="vpc-b")],
        [],
    )
    assert egress_of(by_subnet, "subnet-a").uses_eip
    assert egress_of(by_subnet, "subnet-b") == Egress(VIA_NONE)


def test_a_nat_gateway_with_its_primary_public_address() -> None:
    by_subnet = egress_by_subnet(
        [subnet("subnet-private"), subnet("subnet-private-nat")],
        [table("rtb-1", routes=[default_route(NatGatewayId="nat-1")], subnets=("subnet-private",)),
         table("rtb-2", routes=[default_route(NatGatewayId="nat-2")], subnets=("subnet-private-nat",))],
        [nat("nat-1", {"PublicIp": "198.51.100.2", "IsPrimary": False},
             {"PublicIp": "198.51.100.1", "IsPrimary": True}),
         nat("nat-2", {"PrivateIp": "10.0.5.5"})],  # a private NAT gateway: no public address
    )
    public = egress_of(by_subnet, "subnet-private")
    assert public == Egress(VIA_NAT, "nat-1", "198.51.100.1")
    assert not public.uses_eip
    assert public.text() == "egress leaves through nat-1 (198.51.100.1), the EIP only carries inbound"
    private = egress_of(by_subnet, "subnet-private-nat")
    assert private == Egress(VIA_NAT, "nat-2", "")
    assert private.text() == "egress leaves through nat-2, the EIP only carries inbound"


def test_no_default_route_and_a_blackhole_one_have_no_internet_route() -> None:
    by_subnet = egress_by_subnet(
        [subnet("subnet-isolated"), subnet("subnet-dead")],
        [table("rtb-1", routes=[{"DestinationCidrBlock": "192.168.0.0/16", "GatewayId": "igw-1", "State": "active"}],
               subnets=("subnet-isolated",)),
         # Its NAT gateway was deleted: AWS keeps the route as a blackhole, and drops the traffic.
         table("rtb-2", routes=[{**default_route(NatGatewayId="nat-gone"), "State": "blackhole"}],
               subnets=("subnet-dead",)),
         table("rtb-main", routes=[default_route(GatewayId="igw-1")], main=True)],
        [],
    )
    assert egress_of(by_subnet, "subnet-isolated") == Egress(VIA_NONE)
    # The blackhole decides: the main table's internet route is not used by an associated subnet.
    assert egress_of(by_subnet, "subnet-dead") == Egress(VIA_NONE)
    assert egress_of(by_subnet, "subnet-dead").text() == "no internet route"


def test_another_hop_is_not_the_eip() -> None:
    """A transit gateway (a central egress VPC): the EIP does not carry egress. An instance may be a NAT or a
    firewall that sends traffic on with its source kept: unknown (see below)."""
    by_subnet = egress_by_subnet(
        [subnet("subnet-tgw"), subnet("subnet-instance"), subnet("subnet-v6")],
        [table("rtb-1", routes=[default_route(TransitGatewayId="tgw-1")], subnets=("subnet-tgw",)),
         table("rtb-2", routes=[default_route(InstanceId="i-1", NetworkInterfaceId="eni-1")],
               subnets=("subnet-instance",)),
         # IPv6 only: an egress-only internet gateway never carries 0.0.0.0/0.
         table("rtb-3", routes=[{"DestinationIpv6CidrBlock": "::/0", "EgressOnlyInternetGatewayId": "eigw-1",
                                 "State": "active"}], subnets=("subnet-v6",))],
        [],
    )
    assert egress_of(by_subnet, "subnet-tgw") == Egress(VIA_NAT, "tgw-1")
    assert egress_of(by_subnet, "subnet-instance") == Egress(VIA_UNKNOWN, "i-1")
    assert not egress_of(by_subnet, "subnet-instance").uses_eip
    assert egress_of(by_subnet, "subnet-v6") == Egress(VIA_NONE)


def test_an_association_being_removed_does_not_route() -> None:
    leaving = table("rtb-old", routes=[default_route(GatewayId="igw-1")], subnets=("subnet-a",))
    leaving["Associations"][0]["AssociationState"] = {"State": "disassociating"}
    by_subnet = egress_by_subnet([subnet("subnet-a")],
                                 [leaving, table("rtb-main", routes=[default_route(NatGatewayId="nat-1")], main=True)],
                                 [])
    assert egress_of(by_subnet, "subnet-a") == Egress(VIA_NAT, "nat-1")


def test_a_subnet_not_read_is_unknown_never_guessed() -> None:
    by_subnet = egress_by_subnet([subnet("subnet-a")], [], [])  # its VPC's tables were not read
    assert by_subnet == {}
    for subnet_id in ("subnet-a", "subnet-never-seen", ""):
        egress = egress_of(by_subnet, subnet_id)
        assert egress == Egress(VIA_UNKNOWN)
        assert not egress.uses_eip
        assert egress.text() == "egress path not read yet"
    # A stored row this code does not know (an older or hand-edited map) is not guessed either.
    assert egress_of({"subnet-a": {"via": "other"}}, "subnet-a") == Egress(VIA_UNKNOWN)


def test_the_internet_gateway_text() -> None:
    assert Egress(VIA_IGW, "igw-1").text() == "egress leaves through the internet gateway igw-1: the EIP carries it"


def _one_table(*routes: dict[str, Any]) -> dict[str, dict[str, str]]:
    subnets = [{"SubnetId": "subnet-1", "VpcId": "vpc-1"}]
    tables = [{"RouteTableId": "rtb-1", "VpcId": "vpc-1", "Associations": [{"Main": True}], "Routes": list(routes)}]
    return egress_by_subnet(subnets, tables, [])


def test_a_hop_that_may_hand_egress_back_to_the_internet_gateway_is_unknown_never_a_nat() -> None:
    """An inspection appliance (a gateway load balancer endpoint, AWS Network Firewall's distributed model) or an
    instance keeps the source address and sends the traffic on through this VPC's internet gateway: the EIP may
    well carry it. eipdash cannot tell, so it says so and raises no alert."""
    for route in ({"GatewayId": "vpce-0abc"}, {"InstanceId": "i-0fw"}, {"NetworkInterfaceId": "eni-0fw"}):
        egress = egress_of(_one_table({"DestinationCidrBlock": "0.0.0.0/0", "State": "active", **route}), "subnet-1")
        assert egress.via == VIA_UNKNOWN and not egress.uses_eip
        assert next(iter(route.values())) in egress.text() and "cannot tell" in egress.text()


def test_a_peering_is_no_internet_route_and_a_static_default_route_beats_a_propagated_one() -> None:
    peered = _one_table({"DestinationCidrBlock": "0.0.0.0/0", "State": "active", "VpcPeeringConnectionId": "pcx-1"})
    assert egress_of(peered, "subnet-1").via == VIA_NONE
    both = _one_table(
        {"DestinationCidrBlock": "0.0.0.0/0", "State": "active", "GatewayId": "vgw-1",
         "Origin": "EnableVgwRoutePropagation"},
        {"DestinationCidrBlock": "0.0.0.0/0", "State": "active", "GatewayId": "igw-1", "Origin": "CreateRoute"},
    )
    assert egress_of(both, "subnet-1") == Egress(VIA_IGW, "igw-1")
