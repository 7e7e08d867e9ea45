"""Demo data for the sandbox: three launch specs, their EIP pools, decoys, a VPC's routes, and a few tainted nodes.

The launch specs are Ocean JSON files in ``sandbox/specs/``, loaded with ``manage.py launchspec apply`` like
an operator would. Everything else is created through the emulators' public APIs.

The network is a common EKS layout: the subnets of ``Ec2World.ensure_network`` are public (their route table
sends 0.0.0.0/0 to an internet gateway), and one private subnet sends it to a NAT gateway in a public subnet,
with an EIP of its own that no pool selects. The nodes of ``PRIVATE_SPECS`` run in that private subnet: their
egress leaves through the NAT gateway's address, not through the EIP eipdash gives them, and eipdash says so.

With ``--clusters 2`` a second cluster (``sandbox-eu``, in eu-west-1, on its own Kubernetes emulator) is added
with ``manage.py cluster add --kubeconfig``, and its spec (``sandbox/specs/eu/``) and pool are seeded the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .simulate import SimSpec, Simulation

SPECS_DIR = Path(__file__).resolve().parent / "specs"

# Pool sizes per launch spec, and the tags that put an EIP in each pool. egress-web selects on key and value,
# egress-batch on the key alone (any value), so both forms of Ocean's tagSelector are on show.
POOLS: dict[str, tuple[int, dict[str, str]]] = {
    "egress-web": (4, {"eipdash.io/pool": "egress-web", "Name": "egress-web"}),
    "egress-batch": (3, {"eipdash.io/batch-pool": "blue", "Name": "egress-batch"}),
    "egress-private": (2, {"eipdash.io/pool": "egress-private", "Name": "egress-private"}),
}
INITIAL_NODES: dict[str, int] = {"egress-web": 2, "egress-batch": 1, "egress-private": 1}
# The launch specs whose nodes run in the private subnet, behind the NAT gateway.
PRIVATE_SPECS: frozenset[str] = frozenset({"egress-private"})

DEFAULT_ROUTE = "0.0.0.0/0"
# After the public subnets' /20s (10.0.0.0-10.0.47.255, Ec2World.ensure_network), in the same /16.
PRIVATE_CIDR = "10.0.128.0/20"
# The specs' imageId: moto launches any well-formed AMI id.
IMAGE_ID = "ami-0abcdef1234567890"

# The second sandbox cluster: its name and region match sandbox/specs/eu/*.json.
SECOND_CLUSTER = "sandbox-eu"
SECOND_REGION = "eu-west-1"
SECOND_SPECS_DIR = SPECS_DIR / "eu"
SECOND_POOLS: dict[str, tuple[int, dict[str, str]]] = {
    "egress-eu": (3, {"eipdash.io/pool": "egress-eu", "Name": "egress-eu"}),
}
SECOND_INITIAL_NODES: dict[str, int] = {"egress-eu": 1}


@dataclass(frozen=True)
class PrivateSubnet:
    """The subnet whose default route goes to a NAT gateway, and that gateway's EIP (in no pool)."""

    az: str
    subnet_id: str
    nat_gateway_id: str
    nat_allocation_id: str
    nat_public_ip: str


@dataclass(frozen=True)
class Network:
    vpc_id: str
    internet_gateway_id: str
    public_subnets: dict[str, str]  # az -> subnet id
    private: PrivateSubnet | None = None


@dataclass
class SeedResult:
    specs: list[SimSpec]
    pools: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # allocation_id -> DescribeAddresses entry at seed time: a decoy must look exactly like this forever.
    decoys: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    network: Network | None = None


def spec_files(folder: Path = SPECS_DIR) -> list[Path]:
    return sorted(folder.glob("*.json"))


def read_spec(path: Path, pools: dict[str, tuple[int, dict[str, str]]] = POOLS) -> SimSpec:
    """The launch spec's name and node labels from its Ocean JSON; the pool size from `pools`."""
    document = json.loads(path.read_text())
    body = document.get("launchSpec", document)
    labels = {item["key"]: item["value"] for item in body["labels"]}
    return SimSpec(name=body["name"], labels=labels, pool_size=pools[body["name"]][0])


def _named(resource_type: str, name: str) -> list[dict[str, Any]]:
    """TagSpecifications giving a resource a Name: what the VPC console lists it by."""
    return [{"ResourceType": resource_type, "Tags": [{"Key": "Name", "Value": name}]}]


def route_to_internet(ec2: Any) -> Network:
    """The subnets of ``ensure_network`` made public: an internet gateway on their VPC, and one route table
    sending 0.0.0.0/0 there, associated with each subnet explicitly (not left to the VPC's main table)."""
    client = ec2.client
    subnets: dict[str, str] = dict(ec2.ensure_network())
    vpc_id = client.describe_subnets(SubnetIds=list(subnets.values()))["Subnets"][0]["VpcId"]
    # A VPC has at most one internet gateway: Ec2World already attached one (its main table's default route).
    attached = client.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"]
    if attached:
        gateway_id = attached[0]["InternetGatewayId"]
        client.create_tags(Resources=[gateway_id], Tags=[{"Key": "Name", "Value": "sandbox-igw"}])
    else:
        gateway = client.create_internet_gateway(TagSpecifications=_named("internet-gateway", "sandbox-igw"))
        gateway_id = gateway["InternetGateway"]["InternetGatewayId"]
        client.attach_internet_gateway(InternetGatewayId=gateway_id, VpcId=vpc_id)
    table = client.create_route_table(VpcId=vpc_id, TagSpecifications=_named("route-table", "sandbox-public"))
    table_id = table["RouteTable"]["RouteTableId"]
    client.create_route(RouteTableId=table_id, DestinationCidrBlock=DEFAULT_ROUTE, GatewayId=gateway_id)
    for az, subnet_id in sorted(subnets.items()):
        client.create_tags(Resources=[subnet_id], Tags=[{"Key": "Name", "Value": f"sandbox-public-{az}"}])
        client.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id)
    return Network(vpc_id=vpc_id, internet_gateway_id=gateway_id, public_subnets=subnets)


def add_private_subnet(ec2: Any, network: Network) -> PrivateSubnet:
    """A NAT gateway (with an EIP tagged only with a Name: no pool selects it) in the first zone's public
    subnet, and a private subnet in that zone whose route table sends 0.0.0.0/0 to it."""
    client = ec2.client
    az = sorted(network.public_subnets)[0]
    nat_allocation_id, nat_public_ip = ec2.allocate_eip({"Name": "sandbox-nat"})
    nat = client.create_nat_gateway(SubnetId=network.public_subnets[az], AllocationId=nat_allocation_id,
                                    TagSpecifications=_named("natgateway", "sandbox-nat"))
    nat_gateway_id = nat["NatGateway"]["NatGatewayId"]
    subnet = client.create_subnet(VpcId=network.vpc_id, CidrBlock=PRIVATE_CIDR, AvailabilityZone=az,
                                  TagSpecifications=_named("subnet", f"sandbox-private-{az}"))
    subnet_id = subnet["Subnet"]["SubnetId"]
    table = client.create_route_table(VpcId=network.vpc_id, TagSpecifications=_named("route-table", "sandbox-private"))
    table_id = table["RouteTable"]["RouteTableId"]
    client.create_route(RouteTableId=table_id, DestinationCidrBlock=DEFAULT_ROUTE, NatGatewayId=nat_gateway_id)
    client.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id)
    return PrivateSubnet(az=az, subnet_id=subnet_id, nat_gateway_id=nat_gateway_id,
                         nat_allocation_id=nat_allocation_id, nat_public_ip=nat_public_ip)


def launch_in_subnet(ec2: Any, subnet_id: str) -> tuple[str, str, str]:
    """One running instance in ``subnet_id``: (instance_id, primary_eni_id, private_ip). Ec2World.launch_instance
    picks the public subnet of a zone; a private subnet's node needs its subnet named."""
    instance = ec2.client.run_instances(ImageId=IMAGE_ID, InstanceType="m5.large", MinCount=1, MaxCount=1,
                                        SubnetId=subnet_id)["Instances"][0]
    primary = next(n for n in instance["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
    return instance["InstanceId"], primary["NetworkInterfaceId"], primary["PrivateIpAddress"]


def second_specs() -> list[SimSpec]:
    return [read_spec(path, SECOND_POOLS) for path in spec_files(SECOND_SPECS_DIR)]


def seed_second_cluster(*, simulation: Simulation, add_cluster: Callable[[], object],
                        apply_spec: Callable[[Path], object]) -> SeedResult:
    """The second cluster's demo world: the cluster row (``add_cluster``: ``cluster add --kubeconfig``), its
    spec, its pool in its own region, and its first nodes. No decoys: the first cluster shows those."""
    ec2: Any = simulation.ec2
    add_cluster()
    result = SeedResult(specs=second_specs())
    for path in spec_files(SECOND_SPECS_DIR):
        apply_spec(path)
    result.network = route_to_internet(ec2)
    for spec in result.specs:
        size, tags = SECOND_POOLS[spec.name]
        result.pools[spec.name] = [ec2.allocate_eip(dict(tags, Index=str(i))) for i in range(size)]
    for spec_name, count in SECOND_INITIAL_NODES.items():
        for _ in range(count):
            result.nodes.append(simulation.launch_node(spec_name).name)
    return result


def seed_world(*, simulation: Simulation, apply_spec: Callable[[Path], object],
               initial_nodes: dict[str, int] | None = None) -> SeedResult:
    """Build the demo world. ``apply_spec`` loads one Ocean JSON file (``launchspec apply -f``)."""
    ec2: Any = simulation.ec2
    result = SeedResult(specs=[read_spec(path) for path in spec_files()])
    for path in spec_files():
        apply_spec(path)

    public = route_to_internet(ec2)
    private = add_private_subnet(ec2, public)
    result.network = replace(public, private=private)
    for spec_name in sorted(PRIVATE_SPECS & set(simulation.specs)):
        simulation.place_in_subnet(spec_name, private.az, lambda: launch_in_subnet(ec2, private.subnet_id))
    for spec in result.specs:
        size, tags = POOLS[spec.name]
        result.pools[spec.name] = [ec2.allocate_eip(dict(tags, Index=str(i))) for i in range(size)]

    # Decoys: EIPs no launch spec selects. eipdash must never touch them.
    untagged, _ = ec2.allocate_eip({})
    other_value, _ = ec2.allocate_eip({"eipdash.io/pool": "legacy", "Name": "legacy-nat"})
    bastion_eip, _ = ec2.allocate_eip({"Name": "bastion"})
    bastion_id, bastion_eni, bastion_ip = ec2.launch_instance()
    ec2.client.associate_address(
        AllocationId=bastion_eip, NetworkInterfaceId=bastion_eni, PrivateIpAddress=bastion_ip
    )
    for allocation_id in (untagged, other_value, bastion_eip):
        result.decoys[allocation_id] = ec2.address(allocation_id)

    for spec_name, count in (initial_nodes if initial_nodes is not None else INITIAL_NODES).items():
        for _ in range(count):
            result.nodes.append(simulation.launch_node(spec_name).name)
    return result
