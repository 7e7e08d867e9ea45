"""The sandbox's demo world (sandbox/seed.py) on the real emulators, read back as eipdash and a newcomer see it:
DescribeAddresses, DescribeSubnets, DescribeRouteTables and DescribeNatGateways of moto, and the nodes of the
Kubernetes API emulator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.kube_emulator import KubeEmulator
from sandbox.seed import (
    INITIAL_NODES,
    POOLS,
    PRIVATE_SPECS,
    SECOND_INITIAL_NODES,
    SECOND_REGION,
    SPECS_DIR,
    SeedResult,
    read_spec,
    second_specs,
    seed_second_cluster,
    seed_world,
    spec_files,
)
from sandbox.simulate import STARTUP_TAINT_KEY, KubeHttp, Simulation

POOL_TAG_KEYS = ("eipdash.io/pool", "eipdash.io/batch-pool")


@dataclass
class Seeded:
    world: Ec2World
    result: SeedResult
    applied: list[Path]


@pytest.fixture
def seeded(ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator) -> Seeded:
    world = Ec2World(ec2_emulator.endpoint_url)
    simulation = Simulation(ec2=world, kube=KubeHttp(kube_emulator.url), specs=[read_spec(p) for p in spec_files()])
    applied: list[Path] = []
    result = seed_world(simulation=simulation, apply_spec=applied.append)
    return Seeded(world=world, result=result, applied=applied)


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def node_subnets(client: Any, kube: KubeEmulator) -> dict[str, set[str]]:
    """Node group -> the subnets of its nodes' instances, from the nodes' providerIDs and DescribeInstances."""
    found: dict[str, set[str]] = {}
    for node in kube.list_objects("nodes"):
        instance_id = node["spec"]["providerID"].rsplit("/", 1)[1]
        instance = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        found.setdefault(node["metadata"]["labels"]["eipdash.io/node-group"], set()).add(instance["SubnetId"])
    return found


def default_route(client: Any, subnet_id: str) -> dict[str, Any]:
    """The 0.0.0.0/0 route of the route table explicitly associated with the subnet."""
    tables = client.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["RouteTables"]
    assert len(tables) == 1, f"{subnet_id} has no explicit route table: {tables}"
    routes = [r for r in tables[0]["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert len(routes) == 1, tables[0]
    route: dict[str, Any] = routes[0]
    return route


def assert_via_internet_gateway(client: Any, subnet_id: str) -> None:
    gateway_id = default_route(client, subnet_id).get("GatewayId", "")
    assert gateway_id.startswith("igw-"), f"{subnet_id}: {gateway_id}"
    vpc_id = client.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
    gateway = client.describe_internet_gateways(InternetGatewayIds=[gateway_id])["InternetGateways"][0]
    assert [a["VpcId"] for a in gateway["Attachments"]] == [vpc_id]


def test_seed_builds_pools_decoys_and_tainted_nodes(seeded: Seeded, kube_emulator: KubeEmulator) -> None:
    world, result = seeded.world, seeded.result

    assert seeded.applied == sorted(SPECS_DIR.glob("*.json"))
    assert {spec.name for spec in result.specs} == set(POOLS)
    addresses = world.client.describe_addresses()["Addresses"]
    for name, (size, pool_tags) in POOLS.items():
        key = next(k for k in pool_tags if k in POOL_TAG_KEYS)
        in_pool = [a for a in addresses if key in tags(a) and (key == "eipdash.io/batch-pool"
                                                               or tags(a)[key] == pool_tags[key])]
        assert len(in_pool) == size == len(result.pools[name]), name
    # The pools, the decoys and the NAT gateway's EIP: nothing else.
    assert len(addresses) == sum(size for size, _ in POOLS.values()) + len(result.decoys) + 1
    bastion = [d for d in result.decoys.values() if d.get("AssociationId")]
    assert len(bastion) == 1, "one decoy sits on a non-node instance"

    nodes = kube_emulator.list_objects("nodes")
    assert len(nodes) == len(result.nodes) == sum(INITIAL_NODES.values())
    assert all(STARTUP_TAINT_KEY in [t["key"] for t in n["spec"]["taints"]] for n in nodes)


def test_seed_routes_the_private_specs_nodes_through_a_nat_gateway_and_the_others_through_an_internet_gateway(
    seeded: Seeded, kube_emulator: KubeEmulator
) -> None:
    client = seeded.world.client
    groups = node_subnets(client, kube_emulator)
    assert set(groups) == set(INITIAL_NODES)
    assert PRIVATE_SPECS == {"egress-private"}

    [private_subnet] = groups["egress-private"]
    nat_gateway_id = default_route(client, private_subnet).get("NatGatewayId", "")
    assert nat_gateway_id.startswith("nat-")
    nat = client.describe_nat_gateways(NatGatewayIds=[nat_gateway_id])["NatGateways"][0]
    assert nat["State"] == "available"
    [nat_address] = nat["NatGatewayAddresses"]
    assert nat_address["PublicIp"]
    # The NAT gateway's EIP is its own: in no pool, and it sits in a public subnet of the private one's VPC.
    eip = client.describe_addresses(AllocationIds=[nat_address["AllocationId"]])["Addresses"][0]
    assert eip["PublicIp"] == nat_address["PublicIp"]
    assert not set(tags(eip)) & set(POOL_TAG_KEYS)
    assert_via_internet_gateway(client, nat["SubnetId"])
    subnets = {s["SubnetId"]: s for s in client.describe_subnets(SubnetIds=[private_subnet, nat["SubnetId"]])[
        "Subnets"]}
    assert subnets[private_subnet]["VpcId"] == subnets[nat["SubnetId"]]["VpcId"]
    # Its nodes say the private subnet's zone, as a kubelet there would.
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"]
             for n in kube_emulator.list_objects("nodes", label_selector="eipdash.io/node-group=egress-private")}
    assert zones == {subnets[private_subnet]["AvailabilityZone"]}

    for group in set(INITIAL_NODES) - PRIVATE_SPECS:
        for subnet_id in groups[group]:
            assert subnet_id != private_subnet
            assert_via_internet_gateway(client, subnet_id)
    # Every public subnet, not only those the first nodes landed in: the autoscaler spreads over all of them.
    assert seeded.result.network is not None
    for subnet_id in seeded.result.network.public_subnets.values():
        assert_via_internet_gateway(client, subnet_id)


def test_the_second_clusters_subnets_route_through_an_internet_gateway(
    ec2_emulator: Ec2Emulator, kube_emulator: KubeEmulator
) -> None:
    world = Ec2World(ec2_emulator.endpoint_url, SECOND_REGION)
    simulation = Simulation(ec2=world, kube=KubeHttp(kube_emulator.url), specs=second_specs())

    result = seed_second_cluster(simulation=simulation, add_cluster=lambda: None, apply_spec=lambda _path: None)

    groups = node_subnets(world.client, kube_emulator)
    assert set(groups) == set(SECOND_INITIAL_NODES)
    assert result.network is not None and result.network.private is None
    assert set().union(*groups.values()) <= set(result.network.public_subnets.values())
    for subnet_id in result.network.public_subnets.values():
        assert_via_internet_gateway(world.client, subnet_id)
