"""deploy/iam-policy.json is least-privilege by default: reads only in the configured region, and
Associate/DisassociateAddress only on Elastic IPs that carry the pool tag key (plus the node's network
interface / instance those calls also authorize on), in that region.

The resource types and condition keys are those of the AWS Service Authorization Reference for Amazon EC2:
AssociateAddress authorizes on `elastic-ip`, `instance` and `network-interface`; DisassociateAddress on
`elastic-ip` and `network-interface`; the Describe calls have no resource type (Resource "*") and take
`aws:RequestedRegion`. Each resource of a request must be allowed by some statement, so the tag condition
sits on a statement of its own that names only elastic-ip ARNs (the nodes' ENIs do not carry the pool tag).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICY: dict[str, Any] = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
POOL_TAG_KEY = "eipdash.io/pool"  # the sandbox seed's pool tag key (sandbox/specs/egress-web.json)
REGION = "us-east-1"  # deploy/kubernetes/config.yaml's EIPDASH_CLUSTER_REGION
MOVES = {"ec2:AssociateAddress", "ec2:DisassociateAddress"}
READS = {"ec2:DescribeAddresses", "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces",
         # The region's facts (workers/region_facts.py): the EIP quota, and the subnets' egress paths.
         "ec2:DescribeAccountAttributes", "ec2:DescribeSubnets", "ec2:DescribeRouteTables", "ec2:DescribeNatGateways",
         "servicequotas:GetServiceQuota"}
EIP_QUOTA = "arn:aws:servicequotas:us-east-1:111122223333:ec2/L-0263D0A3"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements() -> list[dict[str, Any]]:
    return list(POLICY["Statement"])


def condition_holds(operator: str, key: str, expected: Any, context: dict[str, str]) -> bool:
    """The few IAM condition operators the policy uses, as IAM evaluates them on single-valued keys."""
    present = key in context
    if operator == "Null":
        return (not present) == (str(expected).lower() == "true")
    if not present:
        return False
    if operator == "StringEquals":
        return context[key] in as_list(expected)
    if operator == "StringLike":
        return any(fnmatch.fnmatchcase(context[key], pattern) for pattern in as_list(expected))
    raise AssertionError(f"operator {operator} is not modelled by this test")


def allowed(action: str, resource: str, context: dict[str, str]) -> bool:
    """Whether some Allow statement of the policy grants `action` on `resource` in `context` (the policy has
    no Deny and no NotAction/NotResource: the test below checks that)."""
    for statement in statements():
        if action not in as_list(statement["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(condition_holds(op, key, expected, context)
               for op, block in conditions.items() for key, expected in block.items()):
            return True
    return False


def request_allowed(action: str, resources: list[tuple[str, dict[str, str]]], region: str) -> bool:
    """A request is allowed when every resource it touches is (IAM authorizes each resource ARN)."""
    return all(allowed(action, arn, {"aws:RequestedRegion": region,
                                     **{f"aws:ResourceTag/{k}": v for k, v in tags.items()}})
               for arn, tags in resources)


def eip(region: str, tags: dict[str, str]) -> tuple[str, dict[str, str]]:
    return f"arn:aws:ec2:{region}:111122223333:elastic-ip/eipalloc-0123", tags


def eni(region: str) -> tuple[str, dict[str, str]]:
    return f"arn:aws:ec2:{region}:111122223333:network-interface/eni-0123", {}


def instance(region: str) -> tuple[str, dict[str, str]]:
    return f"arn:aws:ec2:{region}:111122223333:instance/i-0123", {}


def test_the_policy_uses_only_the_modelled_elements() -> None:
    for statement in statements():
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
    assert {a for s in statements() for a in as_list(s["Action"])} == READS | MOVES


def test_every_statement_is_limited_to_the_requested_region() -> None:
    for statement in statements():
        regions = statement["Condition"]["StringEquals"]["aws:RequestedRegion"]
        assert as_list(regions) == [REGION], statement["Sid"]


def test_moves_are_never_granted_on_every_resource() -> None:
    for statement in statements():
        if MOVES & set(as_list(statement["Action"])):
            assert "*" not in as_list(statement["Resource"]), statement["Sid"]
            for arn in as_list(statement["Resource"]):
                assert arn.split(":")[5].split("/")[0] in ("elastic-ip", "network-interface", "instance"), arn
                if ":elastic-ip/" in arn:
                    conditions = statement["Condition"]
                    tag_conditions = {key for block in conditions.values() for key in block
                                      if key.startswith("aws:ResourceTag/")}
                    assert tag_conditions == {f"aws:ResourceTag/{POOL_TAG_KEY}"}, statement["Sid"]


def test_the_placeholder_tag_key_is_the_sandbox_seeds() -> None:
    seeds = " ".join(p.read_text() for p in (ROOT / "sandbox" / "specs").glob("*.json"))
    assert f'"tagKey": "{POOL_TAG_KEY}"' in seeds


@pytest.mark.parametrize(("action", "resources", "region", "expected"), [
    # What eipdash does: associate a pool EIP onto a node's primary ENI, disassociate it again, read.
    ("ec2:AssociateAddress", [eip(REGION, {POOL_TAG_KEY: "egress-web"}), eni(REGION)], REGION, True),
    ("ec2:AssociateAddress", [eip(REGION, {POOL_TAG_KEY: ""}), eni(REGION), instance(REGION)], REGION, True),
    ("ec2:DisassociateAddress", [eip(REGION, {POOL_TAG_KEY: "egress-web"}), eni(REGION)], REGION, True),
    ("ec2:DescribeAddresses", [("*", {})], REGION, True),
    ("ec2:DescribeInstances", [("*", {})], REGION, True),
    ("ec2:DescribeRouteTables", [("*", {})], REGION, True),
    ("servicequotas:GetServiceQuota", [(EIP_QUOTA, {})], REGION, True),
    # What it must not be able to do: move an EIP outside the pool (a bastion's, an untagged one) ...
    ("ec2:AssociateAddress", [eip(REGION, {}), eni(REGION)], REGION, False),
    ("ec2:AssociateAddress", [eip(REGION, {"eipdash.io/legacy": "x"}), eni(REGION)], REGION, False),
    ("ec2:DisassociateAddress", [eip(REGION, {"Name": "bastion"}), eni(REGION)], REGION, False),
    # ... or act in another region, even on a pool EIP.
    ("ec2:AssociateAddress", [eip("eu-west-1", {POOL_TAG_KEY: "x"}), eni("eu-west-1")], "eu-west-1", False),
    ("ec2:DescribeAddresses", [("*", {})], "eu-west-1", False),
    # ... or read any quota but the EIPs'.
    ("servicequotas:GetServiceQuota", [("arn:aws:servicequotas:us-east-1:111122223333:ec2/L-1216C47A", {})],
     REGION, False),
    # And nothing else at all.
    ("ec2:ReleaseAddress", [eip(REGION, {POOL_TAG_KEY: "x"})], REGION, False),
    ("ec2:AllocateAddress", [eip(REGION, {})], REGION, False),
])
def test_what_the_policy_allows(action: str, resources: list[tuple[str, dict[str, str]]], region: str,
                                expected: bool) -> None:
    assert request_allowed(action, resources, region) is expected


def adapter_actions() -> set[str]:
    """The IAM actions of every call the EC2 adapter sends: the operations it names to _mapped, and the paginated
    reads it names to _every by their method."""
    source = (ROOT / "workers" / "ec2.py").read_text()
    operations = set(re.findall(r'_mapped\("(\w+)"\)', source))
    operations |= {"".join(part.title() for part in method.split("_"))
                   for method in re.findall(r'_every\("(\w+)"', source)}
    service = {"GetServiceQuota": "servicequotas"}
    return {f"{service.get(op, 'ec2')}:{op}" for op in operations}


def test_the_policy_allows_every_call_the_adapter_makes() -> None:
    actions = adapter_actions()
    assert "ec2:DescribeRouteTables" in actions and "servicequotas:GetServiceQuota" in actions  # the parse works
    assert actions == READS | MOVES
    for action in READS:
        resource = EIP_QUOTA if action.startswith("servicequotas:") else "*"
        assert request_allowed(action, [(resource, {})], REGION), action
