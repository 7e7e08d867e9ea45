"""Adopting an EIP: AWS has it on a node of the spec and the record does not say so (a crash, a move by hand
outside eipdash, an association confirmed after an interrupted pass)."""

from __future__ import annotations

from pools import services
from pools.models import Assignment, Event, Node
from pools.planner import Adopt

from ..pass_context import PassContext
from .taint import retaint


def adopt(ctx: PassContext, a: Adopt) -> str:
    node, eip = ctx.node(a.node), ctx.eip(a.allocation_id)
    if a.supersedes:
        # This closes another node's confirmed record on the word of one region-wide reading: look at this
        # one EIP again first (a stale reading may show where it was, not where it is).
        fresh = ctx.ec2.get_address(a.allocation_id)
        if fresh is None or fresh.eni_id != node.eni_id:
            ctx.outcomes[a.node] = Node.State.RELEASED if node.draining else Node.State.WAITING
            ctx.keep_holding(a.supersedes)
            return f"left {a.public_ip} to the next pass: AWS no longer shows it on {a.node}"
        if a.retaint_superseded:
            retaint(ctx, a.supersedes, f"its EIP was found on {a.node}")
    with ctx.fenced():
        if a.supersedes:
            services.assignment_close_all(eip=eip, reason=f"superseded: EIP found on {a.node}",
                                          kind=Assignment.CloseKind.MOVED)
        mine = Assignment.objects.filter(eip=eip, node=node, closed_at__isnull=True).first()
        if mine is not None:
            services.assignment_confirm(assignment=mine, association_id=a.association_id)
        else:
            services.assignment_open(eip=eip, node=node, spec=ctx.spec, actor=ctx.actor,
                                     association_id=a.association_id, confirmed=True, fence=_fence(ctx))
    # A claim an operator opened (a manual reassign whose worker stopped before AWS confirmed it): the adoption
    # finishes their move, and the history names them, not the system.
    ctx.record(Event.Kind.ADOPTED, a.reason, node=node, eip=eip, actor=mine.actor if mine is not None else None)
    return f"adopted {a.public_ip} on {a.node} ({a.reason})"


def _fence(ctx: PassContext) -> int:
    return ctx.lease.fence if ctx.lease is not None else 0
