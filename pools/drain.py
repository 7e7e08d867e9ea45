"""What holds back each EIP of a disabled launch spec: the drain, EIP by EIP. Pure: no I/O, no ORM, no clock.

A disabled spec assigns and taints nothing new; its EIPs go back to the pool by the planner's release rule
(pools/planner.py `release_reason`): the node is deleted, its instance ends, or it drains down to no workload
pods. So what holds an EIP back is the node's side of that rule, said from the same NodeView the planner read,
and an EIP the next pass releases is said in the planner's own words (its Release reason).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .planner import Claim, EipView, NodeView, Plan, node_is_gone
from .vocabulary import RESTING_STATES


@dataclass(frozen=True)
class DrainHold:
    """One EIP a draining spec still holds: on which node, what holds it back, and what will release it."""

    public_ip: str
    allocation_id: str
    node: str
    # What holds it back now ("3 workload pods still run"), or the next pass's release reason.
    why: str
    # What releases it ("once its 3 workload pods are gone"); empty when the next pass does.
    until: str = ""
    next_pass: bool = False

    @property
    def held(self) -> str:
        """The drain box's line: "203.0.113.5 on node-a: 3 workload pods still run"."""
        if self.next_pass:
            return f"{self.address} on {self.node}: released by the next pass ({self.why})"
        return f"{self.address} on {self.node}: {self.why}"

    @property
    def coming(self) -> str:
        """The plan preview's line: "203.0.113.5 from node-a once its 3 workload pods are gone"."""
        if self.next_pass:
            return f"{self.address} from {self.node}: by the next pass ({self.why})"
        return f"{self.address} from {self.node} {self.until}"

    @property
    def address(self) -> str:
        return self.public_ip or self.allocation_id


def _pods(count: int) -> str:
    return f"{count} workload pod{'s' if count != 1 else ''}"


def hold_reason(node: NodeView | None, claim: Claim | None) -> tuple[str, str]:
    """(what holds the EIP on this node back, what will release it): the node's side of release_reason()."""
    if node is None:
        return ("its node is not in the last snapshot", "once a pass sees the node again")
    if claim is not None and not claim.confirmed:
        return ("its association is not confirmed by AWS yet", "once a pass confirms or closes it")
    if node_is_gone(node):
        # Gone, but not released by the next pass: a claim that closes first, or a stale reading re-read.
        return ("its node is gone; the release waits for a fresh reading", "once a pass confirms the node is gone")
    if node.instance_state in RESTING_STATES:
        return (f"its instance is {node.instance_state}: a stopped instance keeps its EIP, as in AWS",
                "once its instance is terminated or the node deleted")
    if node.draining and node.workload_pods is None:
        return ("it drains; its workload pods are not counted yet", "once it has no workload pods left")
    if node.draining and node.workload_pods == 0:
        return ("it has drained; the release waits for a fresh reading", "once a pass releases it")
    if node.draining:
        count = node.workload_pods or 0
        verb = "runs" if count == 1 else "run"
        return (f"{_pods(count)} still {verb}", f"once its {_pods(count)} {'is' if count == 1 else 'are'} gone")
    return ("the node runs and is not draining: a node keeps its EIP while it runs",
            "once the node drains or its instance ends")


def drain_holds(plan: Plan, eips: Sequence[EipView], nodes: Sequence[NodeView], claims: Mapping[str, Claim]
                ) -> list[DrainHold]:
    """Every EIP of the pool held by a node of the view (by its open claim, or by AWS showing it on the node's
    own address), with what holds it back; those the next pass releases with the plan's reason. In IP order."""
    by_name = {node.name: node for node in nodes}
    by_address = {(node.eni_id, node.private_ip): node for node in nodes if node.eni_id}
    releases = {release.allocation_id: release for release in plan.release}
    holds: list[DrainHold] = []
    for eip in eips:
        claim = claims.get(eip.allocation_id)
        release = releases.get(eip.allocation_id)
        on_node = by_address.get((eip.eni_id, eip.private_ip)) if eip.eni_id else None
        holder = claim.node if claim is not None else on_node.name if on_node is not None else None
        if holder is None:
            continue
        if release is not None:
            holds.append(DrainHold(eip.public_ip, eip.allocation_id, release.node, release.reason, next_pass=True))
            continue
        why, until = hold_reason(by_name.get(holder), claim)
        holds.append(DrainHold(eip.public_ip, eip.allocation_id, holder, why, until))
    # Claims on EIPs that left the pool: the plan closes them (its release reason says so).
    pool = {eip.allocation_id for eip in eips}
    for allocation_id, release in releases.items():
        if allocation_id not in pool:
            holds.append(DrainHold(release.public_ip, allocation_id, release.node, release.reason, next_pass=True))
    return sorted(holds, key=_ip_order)


def _ip_order(hold: DrainHold) -> tuple[int, int, str]:
    try:
        return (0, int(ipaddress.ip_address(hold.public_ip)), hold.allocation_id)
    except ValueError:
        return (1, 0, hold.allocation_id)
