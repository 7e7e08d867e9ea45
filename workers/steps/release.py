"""Releasing an EIP: a node that drained or went, an EIP that left the pool, a record that lost its EIP.

The planner decided on the pass's reading; the release rule (pools/release_rule.py) decides again on a fresh
look where the reading may be old, and on a second count of the pods once the node is tainted (I2). The
taint goes back on a live node of the spec before its EIP leaves it (I1).
"""

from __future__ import annotations

from pools import release_rule as rule
from pools import services
from pools.models import Assignment, ElasticIP, Event, Node
from pools.planner import Release

from ..ec2 import Address
from ..kube import KubeError
from ..pass_context import PassContext
from .taint import retaint


def release(ctx: PassContext, r: Release) -> str | None:
    claim = (Assignment.objects.filter(eip__allocation_id=r.allocation_id, closed_at__isnull=True)
             .select_related("node").first())
    node = ctx.nodes.get(r.node)
    decision = second_look(ctx, r, claim)
    if decision.keep is rule.Keep.ON_RECORDED_NODE:
        assert claim is not None
        ctx.keep_holding(claim.node.name)
        return f"kept {r.public_ip} on {claim.node.name}: AWS shows it there, not on {r.node}"
    if decision.keep is rule.Keep.STALE_READING:
        ctx.keep_holding(r.node)
        return f"kept {r.public_ip} on {r.node}: {decision.keep.value}"
    alive = node is not None and node.deleted_at is None
    if r.retaint and alive and retaint(ctx, r.node) and rule.recount_pods(r, decision):
        pods = pods_on(ctx, r.node)
        decision = rule.after_pod_count(decision, pods)
        if decision.keep is rule.Keep.PODS:
            ctx.outcomes[r.node] = ctx.holding_state(r.node) or Node.State.DRAINING
            counted = "could not be counted" if pods is None else f"{pods} workload pod(s) on it"
            return (f"kept {r.public_ip} on {r.node}: {counted} after the taint; the taint stays and the next "
                    "pass decides")
    if decision.association_id:
        with ctx.aws_change():
            ctx.ec2.disassociate(decision.association_id)
    return close_and_record(ctx, r, claim, decision)


def second_look(ctx: PassContext, r: Release, claim: Assignment | None) -> rule.Decision:
    """One fresh DescribeAddresses of the EIP where the reading may be old (pools/release_rule.py)."""
    recorded = rule.RecordedClaim(claim.node.name, claim.eni_id or None, claim.private_ip or None) if claim else None
    if recorded is None or not rule.look_before_release(r, recorded):
        return rule.first_decision(r)
    fresh = _fresh(ctx.ec2.get_address(r.allocation_id))
    node = ctx.nodes.get(r.node)
    node_instance = (node.instance_id or None) if node is not None else None
    owner = (ctx.ec2.owner_of_eni(fresh.eni_id) if fresh is not None and fresh.eni_id
             and rule.needs_eni_owner(r, recorded, fresh, node_instance) else None)
    return rule.after_look(r, recorded, fresh, node_instance_id=node_instance, eni_owner=owner)


def _fresh(address: Address | None) -> rule.FreshLook | None:
    if address is None:
        return None
    return rule.FreshLook(address.association_id, address.eni_id, address.private_ip, address.instance_id)


def pods_on(ctx: PassContext, name: str) -> int | None:
    try:
        return ctx.kube.workload_pod_count(name)
    except KubeError:
        return None  # not counted: kept (I2)


def close_and_record(ctx: PassContext, r: Release, claim: Assignment | None, decision: rule.Decision) -> str | None:
    """The record follows AWS: the claim closes, the EIP's row is free, the history says so, the marks go."""
    with ctx.fenced():
        if claim is not None and not services.assignment_close(assignment=claim, reason=r.reason, kind=r.kind):
            return None  # closed meanwhile by someone else: they recorded it
    if claim is None and not decision.association_id:
        return None
    eip = ElasticIP.objects.filter(allocation_id=r.allocation_id).first()
    node = ctx.nodes.get(r.node)
    with ctx.fenced():
        if eip is not None and decision.association_id:
            ElasticIP.objects.filter(pk=eip.pk).update(association_id="", eni_id="", instance_id="", private_ip="")
            services.region_addresses_written(region=eip.region)
    ctx.record(Event.Kind.RELEASED, r.reason, node=node, eip=eip)
    if node is not None and node.deleted_at is None and not decision.replaced:
        ctx.kube.clear_eip_marks(node.name, instance_id=node.instance_id or None, fence=ctx.fence)
    return f"released {r.public_ip or r.allocation_id} from {r.node} ({r.reason})"
