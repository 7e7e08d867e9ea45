"""Demo data for the sandbox: two launch specs, their EIP pools, decoys, and a few tainted nodes.

The launch specs are Ocean JSON files in ``sandbox/specs/``, loaded with ``manage.py launchspec apply`` like
an operator would. Everything else is created through the emulators' public APIs.

With ``--clusters 2`` a second cluster (``sandbox-eu``, in eu-west-1, on its own Kubernetes emulator) is added
with ``manage.py cluster add --kubeconfig``, and its spec (``sandbox/specs/eu/``) and pool are seeded the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .simulate import SimSpec, Simulation

SPECS_DIR = Path(__file__).resolve().parent / "specs"

# Pool sizes per launch spec, and the tags that put an EIP in each pool. egress-web selects on key and value,
# egress-batch on the key alone (any value), so both forms of Ocean's tagSelector are on show.
POOLS: dict[str, tuple[int, dict[str, str]]] = {
    "egress-web": (4, {"eipdash.io/pool": "egress-web", "Name": "egress-web"}),
    "egress-batch": (3, {"eipdash.io/batch-pool": "blue", "Name": "egress-batch"}),
}
INITIAL_NODES: dict[str, int] = {"egress-web": 2, "egress-batch": 1}

# The second sandbox cluster: its name and region match sandbox/specs/eu/*.json.
SECOND_CLUSTER = "sandbox-eu"
SECOND_REGION = "eu-west-1"
SECOND_SPECS_DIR = SPECS_DIR / "eu"
SECOND_POOLS: dict[str, tuple[int, dict[str, str]]] = {
    "egress-eu": (3, {"eipdash.io/pool": "egress-eu", "Name": "egress-eu"}),
}
SECOND_INITIAL_NODES: dict[str, int] = {"egress-eu": 1}


@dataclass
class SeedResult:
    specs: list[SimSpec]
    pools: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # allocation_id -> DescribeAddresses entry at seed time: a decoy must look exactly like this forever.
    decoys: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)


def spec_files(folder: Path = SPECS_DIR) -> list[Path]:
    return sorted(folder.glob("*.json"))


def read_spec(path: Path, pools: dict[str, tuple[int, dict[str, str]]] = POOLS) -> SimSpec:
    """The launch spec's name and node labels from its Ocean JSON; the pool size from `pools`."""
    document = json.loads(path.read_text())
    body = document.get("launchSpec", document)
    labels = {item["key"]: item["value"] for item in body["labels"]}
    return SimSpec(name=body["name"], labels=labels, pool_size=pools[body["name"]][0])


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
    ec2.ensure_network()
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

    ec2.ensure_network()
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
