"""Making a node ready: its EIP is confirmed on its primary address, so the node is labelled and annotated and
its startup taint lifted (one read and one patch, fenced), and a stale EIP label is removed.

Lifting a taint makes a node schedulable (I1): it never rests on the pass's reading alone, which may be a
shared one taken a moment ago. `ready_all` first looks at the EIPs it is about to confirm with one batched
DescribeAddresses; an assignment's marks rest on the confirmation its slice just read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from pools import metrics
from pools.locks import LeaseLost
from pools.logs import log_fields
from pools.models import Event, Node
from pools.planner import MarkReady

from ..ec2 import Ec2Error
from ..kube import Replaced
from ..pass_context import Outcome, PassContext

log = logging.getLogger(__name__)
# Ready marks (Kubernetes only) per slice: a deadline check between slices.
READY_SLICE = 64


def ready_all(ctx: PassContext, steps: Sequence[MarkReady]) -> None:
    pending = confirmed_on_their_nodes(ctx, list(steps))
    while pending:
        ctx.check()
        if ctx.out_of_time():
            for m in pending:
                ctx.leave(f"make {m.node} ready", node=m.node, failed_state=Node.State.WAITING if m.lift_taint else "")
            return
        ctx.started_a_step = True
        batch, pending = pending[:READY_SLICE], pending[READY_SLICE:]
        for m, outcome in zip(batch, mark_many(ctx, batch), strict=True):
            if isinstance(outcome.error, LeaseLost):
                raise outcome.error
            if outcome.error is not None:
                ctx.failed(f"make {m.node} ready", outcome.error, node=m.node, allocation_id=m.allocation_id,
                           kind="ready", failed_state=Node.State.WAITING if m.lift_taint else "")
            elif outcome.value:
                ctx.report.done.append(outcome.value)


def confirmed_on_their_nodes(ctx: PassContext, steps: list[MarkReady]) -> list[MarkReady]:
    """The marks whose EIP one DescribeAddresses, taken now, shows on the node's primary address: the plan's
    reading may predate a release that another pass (or this spec's previous one) made meanwhile."""
    lifts = [m for m in steps if m.lift_taint]
    if not lifts:
        return steps
    try:
        seen = ctx.ec2.get_addresses(m.allocation_id for m in lifts)
    except Ec2Error as exc:
        for m in lifts:
            ctx.failed(f"make {m.node} ready", exc, node=m.node, allocation_id=m.allocation_id, kind="ready",
                       failed_state=Node.State.WAITING)
        return [m for m in steps if not m.lift_taint]
    kept = []
    for m in steps:
        node = ctx.node(m.node)
        address = seen.get(m.allocation_id)
        if m.lift_taint and (address is None or address.eni_id != node.eni_id
                             or address.private_ip not in (None, node.private_ip)):
            ctx.outcomes[m.node] = Node.State.WAITING
            ctx.report.done.append(f"left {m.node} tainted: AWS no longer shows {m.public_ip} on it")
            continue
        kept.append(m)
    return kept


def mark_many(ctx: PassContext, steps: Sequence[MarkReady]) -> list[Outcome[MarkReady, str]]:
    """The Kubernetes patches concurrently, the records here. Each outcome's value is the line for the report
    ("" for none); its error a KubeError, a LeaseLost (a newer holder's fence) or a DatabaseError."""
    if not steps:
        return []
    ctx.check()
    expected = {m.node: ctx.node(m.node).instance_id or None for m in steps}
    outcomes = ctx.concurrently(lambda m: mark_on_node(ctx, m, expected[m.node]), list(steps))
    with ctx.fenced():  # one commit for the records, one savepoint each
        return [marked(ctx, outcome, expected[outcome.item.node]) for outcome in outcomes]


def marked(ctx: PassContext, outcome: Outcome[MarkReady, bool], expected: str | None) -> Outcome[MarkReady, str]:
    """The record of one mark_on_node outcome (the pass's thread, in a fenced transaction): its value is the line
    for the report ("" for none), its error a KubeError, a LeaseLost or a DatabaseError."""
    m = outcome.item
    if isinstance(outcome.error, Replaced):
        replaced(ctx, m, expected, outcome.error)
        return Outcome(m, value="")
    if outcome.error is not None:
        return Outcome(m, error=outcome.error)
    try:
        with transaction.atomic():
            line = record_ready(ctx, m, lifted=bool(outcome.value))
    except DatabaseError as exc:
        return Outcome(m, error=exc)
    return Outcome(m, value=line or "")


def mark_on_node(ctx: PassContext, m: MarkReady, expected: str | None) -> bool:
    """The Kubernetes half (any thread): label and annotate, lift the taint; both at once in one read and one
    patch when both are due. True when a taint was lifted."""
    taint = settings.EIPDASH_STARTUP_TAINT
    if m.set_marks:
        return ctx.kube.mark_ready(m.node, public_ip=m.public_ip, allocation_id=m.allocation_id,
                                   taint_key=taint if m.lift_taint else None, instance_id=expected, fence=ctx.fence)
    return m.lift_taint and ctx.kube.lift_startup_taint(m.node, taint, instance_id=expected, fence=ctx.fence)


def replaced(ctx: PassContext, m: MarkReady, expected: str | None, exc: Replaced) -> None:
    """The EIP is on the ENI of the instance this pass observed; the name now belongs to another instance, which
    holds no EIP and keeps its taint (I1). The next pass releases the EIP from the dead instance."""
    ctx.outcomes[m.node] = Node.State.WAITING
    log.warning("%s: %s", ctx.spec.name, exc, extra=log_fields(spec=ctx.spec.name, node=m.node,
                                                               allocation_id=m.allocation_id))
    ctx.report.done.append(
        f"did not mark {m.node} ready: the name now belongs to another instance than {expected}, which "
        f"holds no EIP ({m.public_ip} goes back to the pool on the next pass)")


def record_ready(ctx: PassContext, m: MarkReady, *, lifted: bool) -> str | None:
    """The database half (the pass's thread)."""
    node = ctx.node(m.node)
    ready_at = timezone.now()
    if Node.objects.filter(pk=node.pk, eip_ready_at__isnull=True).update(eip_ready_at=ready_at):
        # Once per node (the row's first ready time), like the dashboard's time to EIP.
        metrics.TIME_TO_EIP.observe(max(0.0, (ready_at - node.first_seen_at).total_seconds()))
    Node.objects.filter(pk=node.pk).update(state=Node.State.READY, startup_tainted=False, eip_label=m.public_ip)
    if lifted:
        ctx.record(Event.Kind.TAINT_LIFTED, f"{m.public_ip} confirmed on the node's ENI", node=node,
                   eip=ctx.eip(m.allocation_id))
        return f"lifted the startup taint of {m.node}"
    return None


def unmark(ctx: PassContext, name: str) -> str:
    ctx.kube.clear_eip_marks(name, instance_id=ctx.incarnation(name), fence=ctx.fence)
    with ctx.fenced():
        Node.objects.filter(cluster=ctx.spec.cluster, name=name).update(eip_label="")
    return f"removed the stale EIP label of {name}"
