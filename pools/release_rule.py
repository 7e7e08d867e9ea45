"""The release decision: keep an EIP on its node, or disassociate it. Pure: no I/O, no ORM, no clock.

The planner decides a release on the pass's reading (pools/planner.py). The executor then looks at the world
again before it acts (workers/steps/release.py), because the reading may be a moment old, and asks these
rules at each point:

1. before anything, `look_before_release`: is one fresh DescribeAddresses of this EIP needed?
   - the reading put the EIP on the node being released, but the record has it on another node: the EIP may
     never have left that other node (a stale reading shows an old place);
   - the reading showed the EIP free or elsewhere, but the planner asked for a re-read (`if_still_there`).
2. after the look, `after_look`: keep it where it is, or disassociate which association;
3. once the node is tainted again, `recount_pods` / `after_pod_count`: a drained node whose drain was called
   off may have taken pods between the reading and the taint (I2); any pod, or a count that failed, keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from .planner import IF_THERE_KEEP, Release


@dataclass(frozen=True)
class RecordedClaim:
    """The open assignment of the EIP, as the record has it."""

    node: str
    eni_id: str | None
    private_ip: str | None


@dataclass(frozen=True)
class FreshLook:
    """One DescribeAddresses of this EIP, taken now (None fields: free)."""

    association_id: str | None
    eni_id: str | None
    private_ip: str | None
    instance_id: str | None


class Keep(StrEnum):
    """Why the EIP stays where it is."""

    ON_RECORDED_NODE = "AWS shows it on the recorded node"
    STALE_READING = "AWS still shows it there (a stale reading)"
    PODS = "workload pods on the node after the taint"


@dataclass(frozen=True)
class Decision:
    keep: Keep | None = None
    # The association to take off (None: nothing to disassociate, only the record to close).
    association_id: str | None = None
    # Released from an earlier instance of the node name: its successor's marks are not this EIP's to clear.
    replaced: bool = False


def first_decision(r: Release) -> Decision:
    """What the plan says, before any second look."""
    return Decision(association_id=r.association_id, replaced=r.replaced)


def look_before_release(r: Release, claim: RecordedClaim | None) -> bool:
    return claim is not None and (recorded_elsewhere(r, claim) or reading_said_free(r, claim))


def recorded_elsewhere(r: Release, claim: RecordedClaim) -> bool:
    """The reading puts the EIP on the node being released, the record on another node."""
    return bool(r.association_id and claim.node != r.node and claim.eni_id)


def reading_said_free(r: Release, claim: RecordedClaim) -> bool:
    """The reading showed the EIP free or elsewhere, and the planner asked for a re-read before closing."""
    return not r.association_id and bool(r.if_still_there)


def on_the_claims_address(claim: RecordedClaim, fresh: FreshLook | None) -> bool:
    return (fresh is not None and bool(fresh.association_id) and bool(claim.eni_id)
            and fresh.eni_id == claim.eni_id and fresh.private_ip in (None, claim.private_ip))


def needs_eni_owner(r: Release, claim: RecordedClaim, fresh: FreshLook | None, node_instance_id: str | None) -> bool:
    """DescribeAddresses may leave InstanceId empty for an association by ENI: then ask the ENI who owns it."""
    return (reading_said_free(r, claim) and on_the_claims_address(claim, fresh) and bool(node_instance_id)
            and fresh is not None and not fresh.instance_id)


def after_look(r: Release, claim: RecordedClaim, fresh: FreshLook | None, *, node_instance_id: str | None,
               eni_owner: str | None = None) -> Decision:
    """Keep, or disassociate what AWS shows now."""
    decision = first_decision(r)
    if recorded_elsewhere(r, claim):
        if fresh is not None and fresh.association_id and fresh.eni_id == claim.eni_id:
            return replace(decision, keep=Keep.ON_RECORDED_NODE)
        return decision
    if not on_the_claims_address(claim, fresh):
        return decision  # AWS shows it free or elsewhere too: only the record closes
    assert fresh is not None
    # Still where the claim put it. If AWS has that ENI on another instance than the one now behind the node
    # name, the node was replaced (a reused EKS ip-… name): that is no stale reading to wait out but a dead
    # instance's EIP, which goes back to the pool (I4).
    owner = fresh.instance_id or eni_owner
    outlived = bool(owner and node_instance_id and owner != node_instance_id)
    if r.if_still_there == IF_THERE_KEEP and not outlived:
        return replace(decision, keep=Keep.STALE_READING)
    return Decision(association_id=fresh.association_id, replaced=decision.replaced or outlived)


def recount_pods(r: Release, decision: Decision) -> bool:
    """"0 workload pods" was counted at observe time: once the node is tainted again no new pod lands there,
    so a drained node's pods are counted once more before its EIP goes (I2)."""
    return r.drained and bool(decision.association_id)


def after_pod_count(decision: Decision, pods: int | None) -> Decision:
    """Keep the EIP unless the count is surely 0 (None: the count failed)."""
    return decision if pods == 0 else replace(decision, keep=Keep.PODS)
