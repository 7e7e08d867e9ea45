"""Demo data for the sandbox: two launch specs, their EIP pools, decoys, and a few tainted nodes.

The launch specs are Ocean JSON files in ``sandbox/specs/``, loaded with ``manage.py launchspec apply`` like
an operator would. Everything else is created through the emulators' public APIs.
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


@dataclass
class SeedResult:
    specs: list[SimSpec]
    pools: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # allocation_id -> DescribeAddresses entry at seed time: a decoy must look exactly like this forever.
    decoys: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)


def spec_files() -> list[Path]:
    return sorted(SPECS_DIR.glob("*.json"))


def read_spec(path: Path) -> SimSpec:
    """The launch spec's name and node labels from its Ocean JSON; the pool size from POOLS."""
    document = json.loads(path.read_text())
    body = document.get("launchSpec", document)
    labels = {item["key"]: item["value"] for item in body["labels"]}
    return SimSpec(name=body["name"], labels=labels, pool_size=POOLS[body["name"]][0])


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
