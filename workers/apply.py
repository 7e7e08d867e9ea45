"""Applying a plan: the steps in order (workers/steps/), around the pass's context (workers/pass_context.py).

One failing step is recorded as an `error` event (once per episode) and never stops the others; a lost lease
(or a newer holder's fencing number) stops the whole pass before it writes anything more. The node states the
dashboard shows come from what the steps did, not from the plan.

The invariants every step keeps (README, "How it works"): I1 the startup taint goes back on before an EIP
leaves a live node, and on any schedulable node of the spec without one; I2 no EIP leaves a node that still
runs workload pods; I3 one EIP per node and one node per EIP; I4 the record follows AWS within a pass.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from pools import services
from pools.alerts import Alert, alert_key, alerts_ended
from pools.locks import Lease, LeaseLost
from pools.models import SYSTEM_ACTOR, LaunchSpec, Node, SpecFence
from pools.planner import Plan

from . import budget
from .ec2 import Ec2, Ec2Error, OutOfTime, guarded
from .kube import Kube, KubeError
from .pass_context import PassContext, PassReport
from .steps.adopt import adopt
from .steps.assign import assign_all
from .steps.ready import ready_all, unmark
from .steps.release import release
from .steps.taint import taint_all

log = logging.getLogger(__name__)

__all__ = ["Executor", "PassReport", "plan_node_names"]


def plan_node_names(plan: Plan) -> set[str]:
    """Every node a plan's steps and notes name."""
    names = set(plan.taint) | set(plan.unmark)
    names |= {r.node for r in plan.release} | {s.node for s in plan.assign} | {m.node for m in plan.ready}
    names |= {a.node for a in plan.adopt} | {a.supersedes for a in plan.adopt if a.supersedes}
    names |= {note.node for note in plan.notes if note.node}
    return names


class Executor:
    """Runs one plan's steps in order for one pass."""

    def __init__(self, spec: LaunchSpec, ec2: Ec2, kube: Kube, *, actor: str = SYSTEM_ACTOR,
                 lease: Lease | None = None, deadline: float | None = None) -> None:
        self.ctx = PassContext(spec, ec2, kube, actor=actor, lease=lease, deadline=deadline)

    @property
    def report(self) -> PassReport:
        return self.ctx.report

    def apply(self, plan: Plan, *, read_errors: list[str] | None = None, fingerprint: str = "") -> PassReport:
        """fingerprint: what the pass planned from (observe.quiet_fingerprint); kept for the next pass when this
        one had nothing to do, so that the next pass that sees the same skips its snapshot write and plan."""
        try:
            with budget.deadline(self.ctx.deadline), guarded(self.ctx.send_guard):
                return self._apply(plan, read_errors=read_errors, fingerprint=fingerprint)
        finally:
            self.ctx.close()

    def quiet(self) -> PassReport:
        """A quiet pass (observe.Quiet): nothing changed since the last pass that had nothing to do, so its plan,
        empty, stands, and so do the alerts and node states it left. What every pass writes still is: its time,
        and the sequence number its spec's next readings start from (workers/readings.py)."""
        ctx = self.ctx
        ctx.report.quiet = True
        ctx.fresh_from_here()
        now = timezone.now()
        lease = ctx.lease
        with ctx.fenced():
            LaunchSpec.objects.filter(pk=ctx.spec.pk).update(last_reconciled_at=now, last_successful_pass_at=now)
            services.spec_plan_confirm(spec=ctx.spec, fence=lease.fence if lease is not None else 0,
                                       planned_at=lease.server_time() if lease is not None else None)
        return ctx.report

    def _apply(self, plan: Plan, *, read_errors: list[str] | None = None, fingerprint: str = "") -> PassReport:
        ctx = self.ctx
        ctx.report.plan = plan
        ctx.report.errors.extend(read_errors or ())
        ctx.load_nodes(plan_node_names(plan))
        # Taints first (I1): a schedulable node without an EIP stops taking pods before anything else.
        taint_all(ctx, plan.taint)
        # Releases next: they close records that the adoptions and assignments below may need.
        for r in plan.release:
            self.step(f"release {r.public_ip or r.allocation_id} from {r.node}", partial(release, ctx, r),
                      node=r.node, allocation_id=r.allocation_id, kind="release",
                      failed_state=ctx.holding_state(r.node),
                      # Its node may hold no EIP any more (left the pool, lost): left undone, it would stay
                      # schedulable without one until the next pass (I1). Releasing is safe to finish.
                      urgent=r.retaint)
        for a in plan.adopt:
            self.step(f"adopt {a.public_ip} on {a.node}", partial(adopt, ctx, a), node=a.node,
                      allocation_id=a.allocation_id, kind="adopt")
        assign_all(ctx, plan.assign)
        ready_all(ctx, plan.ready)
        for name in plan.unmark:
            self.step(f"remove the stale EIP label of {name}", partial(unmark, ctx, name), node=name, kind="unmark")
        self.record_notes(plan)
        self.finish(plan, read_errors, fingerprint)
        return ctx.report

    def step(self, what: str, action: Callable[[], str | None], *, node: str = "", allocation_id: str = "",
             kind: str = "", failed_state: str = "", urgent: bool = False) -> None:
        """Run one step; its failure becomes an `error` event and the pass goes on.

        A lost lease is not a step failure: LeaseLost stops the whole pass before this step writes.
        urgent: runs past the deadline like a taint (a release that re-taints a node with no EIP left).
        """
        ctx = self.ctx
        ctx.check()
        # Any step other than an urgent one starts only before the deadline, except the pass's first one, so
        # that a slow read never starves the work. A step left undone leaves its node as it is, for the next.
        if not urgent:
            if ctx.out_of_time():
                ctx.leave(what, node=node, failed_state=failed_state)
                return
            ctx.started_a_step = True
        try:
            with budget.deadline(ctx.grace_deadline() if urgent else ctx.deadline):
                done = action()
        except LeaseLost:
            raise
        except OutOfTime as exc:
            # No EC2 token before the deadline: that call was never sent; the next pass does the step.
            ctx.leave(what, why=str(exc), node=node, failed_state=failed_state)
        except (Ec2Error, KubeError, DatabaseError) as exc:
            ctx.failed(what, exc, node=node, allocation_id=allocation_id, kind=kind, failed_state=failed_state)
        else:
            if done:
                ctx.report.done.append(done)

    def record_notes(self, plan: Plan) -> None:
        ctx = self.ctx
        for note in plan.notes:
            context = services.EventContext(
                launch_spec=ctx.spec.name, cluster=ctx.spec.cluster.name, region=ctx.spec.cluster.region,
                node=note.node, instance_id=ctx.nodes[note.node].instance_id if note.node in ctx.nodes else "",
                public_ip=note.public_ip, allocation_id=note.allocation_id,
            )
            with ctx.fenced():
                services.event_record(kind=note.kind, context=context, reason=note.reason, actor=ctx.actor)
            ctx.report.done.append(f"{note.kind}: {note.reason}")

    def finish(self, plan: Plan, read_errors: list[str] | None, fingerprint: str = "") -> None:
        """The pass's last writes: its alerts, its time, the node states, and the fingerprint of a pass that had
        nothing to do ("" otherwise: a later pass can never match an older quiet one). Fenced like every other
        write."""
        ctx = self.ctx
        if ctx.report.left:
            # Not an error event: nothing failed, and the next pass (within seconds) starts from the world as it
            # is. But the pass did not apply its whole plan, so it is not a successful pass.
            # A step is also left when its call could not be sent in time (no EC2 token, a look at its target
            # gone stale), well before the deadline: the message says which it was.
            reached = ctx.deadline is not None and time.monotonic() >= ctx.deadline
            head = (f"stopped at the pass deadline ({settings.EIPDASH_PASS_SECONDS}s)" if reached
                    else "calls not sent in time")
            message = f"{head}: {len(ctx.report.left)} step(s) left for the next pass, first: {ctx.report.left[0]}"
            ctx.report.errors.append(message)
            log.warning("%s: %s", ctx.spec.name, message)
        alerts = set(plan.alerts) | ctx.step_alerts | ({alert_key(Alert.READ_FAILED)} if read_errors else set())
        ctx.fresh_from_here()
        now = timezone.now()
        by_state: dict[str, list[str]] = defaultdict(list)
        for name, state in {**plan.node_states, **ctx.outcomes}.items():
            by_state[state].append(name)
        ended = alerts_ended(ctx.spec.active_alerts or [], alerts, ctx.spec.alerts_ended or {}, now)
        with ctx.fenced():
            LaunchSpec.objects.filter(pk=ctx.spec.pk).update(
                active_alerts=sorted(alerts), alerts_ended=ended, last_reconciled_at=now,
                **({} if ctx.report.errors else {"last_successful_pass_at": now}),
            )
            for state, names in by_state.items():
                Node.objects.filter(cluster=ctx.spec.cluster, name__in=names).exclude(state=state).update(state=state)
            quiet = plan.is_empty and not plan.deferred and not ctx.report.errors and not ctx.report.left
            SpecFence.objects.filter(spec_id=ctx.spec.pk).update(quiet_fingerprint=fingerprint if quiet else "")

