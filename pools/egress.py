"""Where a subnet's internet-bound traffic leaves: through the internet gateway (then a node's EIP is the
address the world sees), or through something else (a NAT gateway: the EIP only carries inbound traffic).

Pure: it works on the raw shapes of DescribeSubnets, DescribeRouteTables and DescribeNatGateways (as the EC2
adapter, workers/ec2.py, returns them) and on the JSON map stored in RegionFacts.egress; no Django, no boto3.

How AWS routes a subnet: by the route table explicitly associated with the subnet, else by its VPC's main
route table. Only the IPv4 default route (0.0.0.0/0) of that table is judged:

- its target is an internet gateway (``igw-…``): VIA_IGW, the only path on which the EIP carries egress;
- a NAT gateway (``nat-…``): VIA_NAT, with the gateway's public IP when it has one (a private NAT gateway has
  none);
- a hop into another network (a transit gateway, a virtual private gateway, a local or carrier gateway, a core
  network): also VIA_NAT, with that target's id. Such traffic does reach somewhere, so "no internet route" would
  be wrong, and what matters to the pool is the same as behind a NAT gateway: the traffic leaves the internet with
  the address of that other network's egress, not the EIP. The target id in the text says which hop it is;
- a hop that may hand the traffic back to this VPC's internet gateway with its source kept (an inspection
  appliance behind a gateway load balancer endpoint ``vpce-…``, AWS Network Firewall in the distributed model, an
  instance or its ENI, which may be a firewall or a NAT instance): VIA_UNKNOWN. eipdash cannot tell which, and
  unknown is never guessed either way (no alert);
- a VPC peering connection: VIA_NONE (AWS does not route a peer's internet traffic through it);
- no default route, or one in state ``blackhole`` (its target was deleted: AWS drops the traffic): VIA_NONE.

Where a table holds a static and a propagated default route (a virtual private gateway's propagation), AWS
prefers the static one, and so does this.

An egress-only internet gateway serves IPv6 only, so it never is the target of 0.0.0.0/0 and is not looked at.
A subnet whose route table was not in the reads (read between two calls, say) is absent from the map, and
`egress_of` says VIA_UNKNOWN for it, as for any subnet never read: unknown is never guessed as either path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

VIA_IGW = "internet-gateway"
VIA_NAT = "nat"
VIA_NONE = "none"
VIA_UNKNOWN = ""

DEFAULT_ROUTE = "0.0.0.0/0"
_KNOWN = frozenset({VIA_IGW, VIA_NAT, VIA_NONE})
# Route fields naming a hop into another network, in the order they are looked at. GatewayId also carries
# virtual private gateways (vgw-); a gateway load balancer endpoint (vpce-) there is a hop that may come back.
_OTHER_NETWORKS = ("TransitGatewayId", "LocalGatewayId", "CarrierGatewayId", "CoreNetworkArn", "GatewayId")
# Hops that may send the traffic on through this VPC's internet gateway with its source (the EIP) kept.
_MAY_COME_BACK = ("InstanceId", "NetworkInterfaceId")
# The Origin of a route that a virtual private gateway propagated: a static route to the same prefix wins.
_PROPAGATED = "EnableVgwRoutePropagation"


@dataclass(frozen=True)
class Egress:
    via: str  # VIA_IGW | VIA_NAT | VIA_NONE | VIA_UNKNOWN
    target: str = ""  # "igw-…" / "nat-…" (or the other hop's id) / ""
    address: str = ""  # the NAT gateway's public IP, "" otherwise

    @property
    def uses_eip(self) -> bool:
        """Whether the node's EIP is the address its outbound traffic leaves with."""
        return self.via == VIA_IGW

    def text(self) -> str:
        if self.via == VIA_IGW:
            return f"egress leaves through the internet gateway {self.target}: the EIP carries it"
        if self.via == VIA_NAT:
            hop = f"{self.target} ({self.address})" if self.address else (self.target or "a NAT")
            return f"egress leaves through {hop}, the EIP only carries inbound"
        if self.via == VIA_NONE:
            return "no internet route"
        if self.target:
            return (f"egress goes to {self.target}, which may send it on through the internet gateway with the EIP "
                    "or with an address of its own: eipdash cannot tell")
        return "egress path not read yet"


def egress_by_subnet(subnets: Iterable[Mapping[str, Any]], route_tables: Iterable[Mapping[str, Any]],
                     nat_gateways: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Subnet id -> {"via", "target", "address"} (JSON-able, as RegionFacts.egress stores it)."""
    addresses = {str(nat["NatGatewayId"]): _public_ip(nat) for nat in nat_gateways if nat.get("NatGatewayId")}
    explicit: dict[str, Mapping[str, Any]] = {}
    main: dict[str, Mapping[str, Any]] = {}
    for table in route_tables:
        for association in table.get("Associations") or []:
            if not _associated(association):
                continue
            if association.get("SubnetId"):
                explicit[str(association["SubnetId"])] = table
            elif association.get("Main") and table.get("VpcId"):
                main[str(table["VpcId"])] = table
    tables: dict[str, Mapping[str, Any]] = {}
    for subnet in subnets:
        subnet_id, vpc_id = str(subnet.get("SubnetId") or ""), str(subnet.get("VpcId") or "")
        found = explicit.get(subnet_id) or main.get(vpc_id)
        if subnet_id and found is not None:
            tables[subnet_id] = found
    # A subnet made after DescribeSubnets answered, but already associated when the tables were read.
    for subnet_id, table in explicit.items():
        tables.setdefault(subnet_id, table)
    return {subnet_id: _row(_egress_of_table(table, addresses)) for subnet_id, table in sorted(tables.items())}


def egress_of(by_subnet: Mapping[str, Mapping[str, str]], subnet_id: str) -> Egress:
    """A subnet's egress from the stored map; VIA_UNKNOWN for a subnet it does not hold (or a row it cannot read)."""
    row = by_subnet.get(subnet_id) if subnet_id else None
    if not isinstance(row, Mapping) or row.get("via") not in _KNOWN:
        # A hop eipdash cannot judge (a firewall endpoint, an instance) keeps its id, for the page to name.
        hop = str(row.get("target") or "") if isinstance(row, Mapping) and row.get("via") == VIA_UNKNOWN else ""
        return Egress(VIA_UNKNOWN, hop)
    return Egress(str(row["via"]), str(row.get("target") or ""), str(row.get("address") or ""))


def _associated(association: Mapping[str, Any]) -> bool:
    # Older answers carry no AssociationState: those are in force. "disassociating" or "failed" ones are not.
    state = (association.get("AssociationState") or {}).get("State")
    return state in (None, "associated")


def _public_ip(nat: Mapping[str, Any]) -> str:
    """The NAT gateway's public IP: its primary address's (the one its traffic leaves with), else the first."""
    found = [a for a in nat.get("NatGatewayAddresses") or [] if a.get("PublicIp")]
    primary = next((a for a in found if a.get("IsPrimary")), found[0] if found else None)
    return str(primary["PublicIp"]) if primary else ""


def _egress_of_table(table: Mapping[str, Any], nat_addresses: Mapping[str, str]) -> Egress:
    defaults = [r for r in table.get("Routes") or [] if r.get("DestinationCidrBlock") == DEFAULT_ROUTE]
    route = min(defaults, key=lambda r: r.get("Origin") == _PROPAGATED, default=None)  # static first
    if route is None or route.get("State") == "blackhole":
        return Egress(VIA_NONE)
    gateway = str(route.get("GatewayId") or "")
    if gateway.startswith("igw-"):
        return Egress(VIA_IGW, gateway)
    nat = str(route.get("NatGatewayId") or "")
    if nat:
        return Egress(VIA_NAT, nat, nat_addresses.get(nat, ""))
    if gateway.startswith("vpce-"):
        return Egress(VIA_UNKNOWN, gateway)
    if hop := next((str(route[key]) for key in _MAY_COME_BACK if route.get(key)), ""):
        return Egress(VIA_UNKNOWN, hop)
    if route.get("VpcPeeringConnectionId"):
        return Egress(VIA_NONE, str(route["VpcPeeringConnectionId"]))
    other = next((str(route[key]) for key in _OTHER_NETWORKS if route.get(key) and route[key] != "local"), "")
    return Egress(VIA_NAT, other) if other else Egress(VIA_NONE)


def _row(egress: Egress) -> dict[str, str]:
    return {"via": egress.via, "target": egress.target, "address": egress.address}
