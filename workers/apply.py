"""Applying a plan: each step opens its claim in the DB, calls AWS / Kubernetes, confirms, records the Event.

One failing step is recorded as an `error` event (once per episode) and never stops the others. The node
states the dashboard shows come from what the steps did, not from the plan.

Concurrency: the AWS and Kubernetes calls of the taints, the assignments and the ready marks run in a
bounded pool (EIPDASH_STEP_CONCURRENCY threads), each EC2 call paced by the account's shared budget
(workers/budget.py). Everything that touches the database stays in the pass's own thread. Assignments go in
slices: open the slice's claims, one DescribeAddresses for what is already on the target ENIs,
AssociateAddress concurrently, one DescribeAddresses (by allocation id) to confirm them all, the records,
then the labels and taint lifts concurrently. Between slices the pass checks its lease and its deadline.
Releases and adoptions stay sequential: they are few, and each re-reads AWS and re-counts pods.

The invariants every step keeps (README, "How it works"): I1 the startup taint goes back on before an EIP
leaves a live node, and on any schedulable node of the spec without one; I2 no EIP leaves a node that still
runs workload pods; I3 one EIP per node and one node per EIP (the DB claims, AllowReassociation=False, a
fresh look at the target private IP before AssociateAddress, and no second EIP for a node in the pass that
closed its claim); I4 the record follows AWS within a pass.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, TypeVar

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from pools import metrics, services
from pools.locks import Lease, LeaseLost
from pools.logs import log_fields
from pools.models import SYSTEM_ACTOR, Assignment, ElasticIP, Event, LaunchSpec, Node
from pools.planner import DEAD_STATES, IF_THERE_KEEP, Adopt, Assign, MarkReady, Plan, Release

from . import budget
from .ec2 import FILTER_VALUES_LIMIT, Address, Ec2, Ec2Error, OutOfTime, Throttled, Transient
from .kube import Kube, KubeError, Replaced
from .kube import NotFound as KubeNotFound
from .observe import READ_ALERT, error_text

log = logging.getLogger(__name__)
# Alert keys of failing steps start with this: one `error` event per episode and step, not one per pass.
STEP_ALERT_PREFIX = "step-failed:"
# Work already under way at the deadline (an association's confirmation, a re-taint) may wait this much
# longer for an EC2 token: finishing it beats leaving it half-done. EIPDASH_PASS_SECONDS stays at least 10 s
# under the Celery soft limit, so this never reaches it.
FINISH_GRACE_SECONDS = 5.0
# Ready marks (Kubernetes only) per slice: a deadline check between slices.
READY_SLICE = 64

_I = TypeVar("_I")
_R = TypeVar("_R")


@dataclass
class Outcome(Generic[_I, _R]):
    """One item's result from the pool: its value, or the AWS / Kubernetes error it raised."""

    item: _I
    value: _R | None = None
    error: Exception | None = None  # an Ec2Error or KubeError from the pool; a DatabaseError from the records


@dataclass
class PassReport:
    spec: str
    plan: Plan | None = None
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str = ""  # why the pass did not run (another worker holds the spec)
    read_failed: bool = False  # the pass stopped because AWS or Kubernetes could not be read
    left: list[str] = field(default_factory=list)  # steps not started: the pass reached its deadline

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"{self.spec}: skipped ({self.skipped})"]
        body = self.done or ["nothing to do"]
        return [f"{self.spec}: {line}" for line in body + [f"ERROR {e}" for e in self.errors]]


def plan_node_names(plan: Plan) -> set[str]:
    """Every node a plan's steps and notes name."""
    names = set(plan.taint) | set(plan.unmark)
    names |= {r.node for r in plan.release} | {s.node for s in plan.assign} | {m.node for m in plan.ready}
    names |= {a.node for a in plan.adopt} | {a.supersedes for a in plan.adopt if a.supersedes}
    names |= {note.node for note in plan.notes if note.node}
    return names


class Executor:
    def __init__(self, spec: LaunchSpec, ec2: Ec2, kube: Kube, *, actor: str = SYSTEM_ACTOR,
                 lease: Lease | None = None, deadline: float | None = None) -> None:
        self.spec = spec
        # The spec's lease (pools/locks.py): checked before every step, so a pass that lost it stops.
        self.lease = lease
        self.ec2 = ec2
        self.kube = kube
        self.actor = actor
        self.report = PassReport(spec=spec.name)
        # time.monotonic() after which no new step starts (None: no deadline). The Celery soft limit cannot
        # stop a pass (botocore retries the exception it raises), so the pass stops itself between steps.
        self.deadline = deadline
        self.started_a_step = False
        # Only the rows the plan names (apply() loads them, node() any other): a cluster keeps a row per
        # deleted node for its history, and loading them all made a steady pass slow down with every one.
        self.nodes: dict[str, Node] = {}
        # The alerts true before this pass: a step that failed in the last pass too is the same episode.
        self.active_alerts = frozenset(
            LaunchSpec.objects.filter(pk=spec.pk).values_list("active_alerts", flat=True).first() or [])
        self.step_alerts: set[str] = set()
        # Node states from what happened, where that differs from the plan (a failed step).
        self.outcomes: dict[str, str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._eips: dict[str, ElasticIP] = {}

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            self.load_nodes([name])
        return self.nodes[name]

    def load_nodes(self, names: Iterable[str]) -> None:
        wanted = set(names) - self.nodes.keys()
        if wanted:
            rows = Node.objects.filter(cluster=self.spec.cluster, name__in=wanted).select_related("cluster")
            self.nodes.update((row.name, row) for row in rows)

    def incarnation(self, name: str) -> str | None:
        """The instance this pass observed behind the node name: every Kubernetes write for the node is
        refused (kube.Replaced) if the name belongs to another instance by the time it lands."""
        self.load_nodes([name])
        row = self.nodes.get(name)
        return (row.instance_id or None) if row is not None else None

    def eip(self, allocation_id: str) -> ElasticIP:
        """The EIP's row, for its id and the events' context (the slices load theirs in one query)."""
        if allocation_id not in self._eips:
            self._eips[allocation_id] = ElasticIP.objects.get(allocation_id=allocation_id)
        return self._eips[allocation_id]

    def context(self, *, node: Node | None = None, eip: ElasticIP | None = None) -> services.EventContext:
        return services.event_context(spec=self.spec, node=node, eip=eip)

    def record(self, kind: str, reason: str, *, node: Node | None = None, eip: ElasticIP | None = None) -> None:
        services.event_record(kind=kind, context=self.context(node=node, eip=eip), reason=reason, actor=self.actor)

    def step(self, what: str, action: Callable[[], str | None], *, node: str = "", allocation_id: str = "",
             kind: str = "", failed_state: str = "", urgent: bool = False) -> None:
        """Run one step; its failure becomes an `error` event and the pass goes on.

        A lost lease is not a step failure: LeaseLost stops the whole pass before this step writes.
        urgent: runs past the deadline like a taint (a release that re-taints a node with no EIP left).
        """
        self.check_lease()
        # Taints always run (I1 comes before the deadline, and they are first and cheap); any other step
        # starts only before the deadline, except the pass's first one, so that a slow read never starves
        # the work. A step left undone leaves its node as it is, like a failed one, for the next pass.
        finishing = kind == "taint" or urgent
        if not finishing:
            if self.out_of_time():
                self.leave(what, node=node, failed_state=failed_state)
                return
            self.started_a_step = True
        try:
            with budget.deadline(self.grace_deadline() if finishing else self.deadline):
                done = action()
        except OutOfTime:
            # No EC2 token before the deadline: that call was never sent; the next pass does the step.
            self.leave(what, node=node, failed_state=failed_state)
        except (Ec2Error, KubeError, DatabaseError) as exc:
            self.failed(what, exc, node=node, allocation_id=allocation_id, kind=kind, failed_state=failed_state)
        else:
            if done:
                self.report.done.append(done)

    def failed(self, what: str, exc: Exception, *, node: str = "", allocation_id: str = "", kind: str = "",
               failed_state: str = "") -> None:
        """A step (or one item of a slice) failed: in the report, and one `error` event per episode."""
        message = error_text(what, exc)
        self.report.errors.append(message)
        if failed_state and node:
            self.outcomes[node] = failed_state
        # One event per episode: a node that keeps failing must not write one event every pass.
        key = f"{STEP_ALERT_PREFIX}{kind or what}:{node or allocation_id}"
        self.step_alerts.add(key)
        if key not in self.active_alerts:
            node_row = self.nodes.get(node)
            eip_row = ElasticIP.objects.filter(allocation_id=allocation_id).first() if allocation_id else None
            self.record(Event.Kind.ERROR, message, node=node_row, eip=eip_row)
        log.warning("%s", message, extra=log_fields(spec=self.spec.name, node=node, allocation_id=allocation_id))

    def leave(self, what: str, *, node: str = "", failed_state: str = "") -> None:
        """A step not done in this pass (its deadline): its node stays as it is, for the next pass."""
        self.report.left.append(what)
        if failed_state and node:
            self.outcomes[node] = failed_state

    def check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def out_of_time(self) -> bool:
        """Past the deadline, once some step ran (the pass's first step always runs)."""
        return self.started_a_step and self.deadline is not None and time.monotonic() >= self.deadline

    def grace_deadline(self) -> float | None:
        return None if self.deadline is None else self.deadline + FINISH_GRACE_SECONDS

    def concurrently(self, fn: Callable[[_I], _R], items: Sequence[_I]) -> list[Outcome[_I, _R]]:
        """fn(item) for every item in the pass's bounded pool, in order. Only AWS and Kubernetes calls go
        in fn (never the database: that stays in this thread); their errors (and a lost lease) come back per
        item, anything else is raised here. Each thread runs in this thread's context, so the EC2 calls keep
        its deadline."""
        def one(item: _I) -> Outcome[_I, _R]:
            try:
                return Outcome(item, value=fn(item))
            except (Ec2Error, KubeError, LeaseLost) as exc:
                return Outcome(item, error=exc)

        if len(items) <= 1:
            return [one(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=settings.EIPDASH_STEP_CONCURRENCY,
                                            thread_name_prefix=f"pass-{self.spec.pk}")
        futures = [self._pool.submit(contextvars.copy_context().run, one, item) for item in items]
        return [future.result() for future in futures]

    def apply(self, plan: Plan, *, read_errors: list[str] | None = None) -> PassReport:
        try:
            with budget.deadline(self.deadline):
                return self._apply(plan, read_errors=read_errors)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _apply(self, plan: Plan, *, read_errors: list[str] | None = None) -> PassReport:
        self.report.plan = plan
        self.report.errors.extend(read_errors or ())
        self.load_nodes(plan_node_names(plan))
        # Taints first (I1): a schedulable node without an EIP stops taking pods before anything else.
        self.taint_all(plan.taint)
        # Releases next: they close records that the adoptions and assignments below may need.
        for r in plan.release:
            self.step(f"release {r.public_ip or r.allocation_id} from {r.node}", partial(self.release, r),
                      node=r.node, allocation_id=r.allocation_id, kind="release",
                      failed_state=self.holding_state(r.node),
                      # Its node may hold no EIP any more (left the pool, lost): left undone, it would stay
                      # schedulable without one until the next pass (I1). Releasing is safe to finish.
                      urgent=r.retaint)
        for a in plan.adopt:
            self.step(f"adopt {a.public_ip} on {a.node}", partial(self.adopt, a),
                      node=a.node, allocation_id=a.allocation_id, kind="adopt")
        self.assign_all(plan.assign)
        self.ready_all(plan.ready)
        for name in plan.unmark:
            self.step(f"remove the stale EIP label of {name}", partial(self.unmark, name), node=name,
                      kind="unmark")
        for note in plan.notes:
            context = services.EventContext(
                launch_spec=self.spec.name, cluster=self.spec.cluster.name, region=self.spec.cluster.region,
                node=note.node, instance_id=self.nodes[note.node].instance_id if note.node in self.nodes else "",
                public_ip=note.public_ip, allocation_id=note.allocation_id,
            )
            services.event_record(kind=note.kind, context=context, reason=note.reason, actor=self.actor)
            self.report.done.append(f"{note.kind}: {note.reason}")
        if self.report.left:
            # Not an error event: nothing failed, and the next pass (within seconds) starts from the world as
            # it is. But the pass did not apply its whole plan, so it is not a successful pass.
            message = (f"stopped at the pass deadline ({settings.EIPDASH_PASS_SECONDS}s): "
                       f"{len(self.report.left)} step(s) left for the next pass, first: {self.report.left[0]}")
            self.report.errors.append(message)
            log.warning("%s: %s", self.spec.name, message)
        alerts = set(plan.alerts) | self.step_alerts | ({READ_ALERT} if read_errors else set())
        now = timezone.now()
        LaunchSpec.objects.filter(pk=self.spec.pk).update(
            active_alerts=sorted(alerts), last_reconciled_at=now,
            **({} if self.report.errors else {"last_successful_pass_at": now}),
        )
        self.save_node_states(plan)
        return self.report

    def holding_state(self, name: str) -> str:
        """The state of a node whose release did not happen: it still holds its EIP."""
        self.load_nodes([name])
        node = self.nodes.get(name)
        if node is None or node.deleted_at is not None or node.instance_state in DEAD_STATES:
            return ""  # gone either way: the plan's state stands
        return Node.State.DRAINING if node.draining else Node.State.READY

    def save_node_states(self, plan: Plan) -> None:
        """From what happened: the plan's states, corrected by the steps that failed or held back."""
        by_state: dict[str, list[str]] = defaultdict(list)
        for name, state in {**plan.node_states, **self.outcomes}.items():
            by_state[state].append(name)
        for state, names in by_state.items():
            Node.objects.filter(cluster=self.spec.cluster, name__in=names).exclude(state=state).update(state=state)

    # The steps. Each returns a line for the report, or None when there was nothing to say.

    def _tainted(self, name: str) -> None:
        Node.objects.filter(cluster=self.spec.cluster, name=name).update(startup_tainted=True)
        if name in self.nodes:
            self.nodes[name].startup_tainted = True  # an assignment later in this pass lifts it again

    def release(self, r: Release) -> str | None:
        claim = (Assignment.objects.filter(eip__allocation_id=r.allocation_id, closed_at__isnull=True)
                 .select_related("node").first())
        node = self.nodes.get(r.node)
        association_id = r.association_id
        # Released from an earlier instance of this name: the node object now is its successor, whose
        # label and annotation are not this EIP's to clear.
        replaced = r.replaced
        if claim is not None and association_id and claim.node.name != r.node and claim.eni_id:
            # The reading puts the EIP on r.node, the record on another node: before that record closes,
            # make sure the EIP has really left the recorded node (a stale reading shows an old place).
            fresh = self.ec2.get_address(r.allocation_id)
            if fresh is not None and fresh.association_id and fresh.eni_id == claim.eni_id:
                if self.holding_state(claim.node.name):
                    self.outcomes[claim.node.name] = self.holding_state(claim.node.name)
                return f"kept {r.public_ip} on {claim.node.name}: AWS shows it there, not on {r.node}"
        if claim is not None and not association_id and r.if_still_there:
            # The snapshot showed the EIP free or elsewhere. One DescribeAddresses can be stale: look again
            # at this one EIP before closing the record of a node that may still be using it.
            fresh = self.ec2.get_address(r.allocation_id)
            if (fresh is not None and fresh.association_id and claim.eni_id and fresh.eni_id == claim.eni_id
                    and fresh.private_ip in (None, claim.private_ip)):
                # Still where the claim put it; but if AWS has that ENI on another instance than the one now
                # behind the node name, the node was replaced (a reused EKS ip-… name): that is no stale
                # reading to wait out but a dead instance's EIP, which goes back to the pool (I4).
                # (DescribeAddresses may leave InstanceId empty for an association by ENI: ask the ENI.)
                owner = None
                if node is not None and node.instance_id and fresh.eni_id:
                    owner = fresh.instance_id or self.ec2.owner_of_eni(fresh.eni_id)
                outlived = bool(owner and node is not None and owner != node.instance_id)
                replaced = replaced or outlived
                if r.if_still_there == IF_THERE_KEEP and not outlived:
                    if self.holding_state(r.node):
                        self.outcomes[r.node] = self.holding_state(r.node)
                    return f"kept {r.public_ip} on {r.node}: AWS still shows it there (a stale reading)"
                association_id = fresh.association_id
        if r.retaint and node is not None and node.deleted_at is None:
            # I1: the taint goes back on before the EIP goes, so that a drain called off (uncordon, the
            # autoscaler or Karpenter changing its mind) never leaves the node schedulable without it.
            try:
                # By name: if the name already belongs to a new node, that one holds no EIP either.
                self.kube.add_startup_taint(r.node, settings.EIPDASH_STARTUP_TAINT)
                self._tainted(r.node)
            except KubeNotFound:
                pass  # the node object is gone: nothing can be scheduled on it
            else:
                if r.drained and association_id:
                    # I2: "0 workload pods" was counted at observe time. If the drain was called off and pods
                    # were scheduled before the taint landed, they still use the EIP. Now that the node is
                    # tainted no new pod lands there: count again, and keep the EIP unless it is surely 0.
                    try:
                        pods: int | None = self.kube.workload_pod_count(r.node)
                    except KubeError:
                        pods = None
                    if pods != 0:
                        self.outcomes[r.node] = self.holding_state(r.node) or Node.State.DRAINING
                        counted = "could not be counted" if pods is None else f"{pods} workload pod(s) on it"
                        return (f"kept {r.public_ip} on {r.node}: {counted} after the taint; the taint stays "
                                "and the next pass decides")
        if association_id:
            self.ec2.disassociate(association_id)
        if claim is not None and not services.assignment_close(assignment=claim, reason=r.reason, kind=r.kind):
            return None  # closed meanwhile by someone else: they recorded it
        if claim is None and not association_id:
            return None
        eip = ElasticIP.objects.filter(allocation_id=r.allocation_id).first()
        if eip is not None and association_id:
            ElasticIP.objects.filter(pk=eip.pk).update(association_id="", eni_id="", instance_id="", private_ip="")
        self.record(Event.Kind.RELEASED, r.reason, node=node, eip=eip)
        if node is not None and node.deleted_at is None and not replaced:
            self.kube.clear_eip_marks(node.name, instance_id=node.instance_id or None)
        return f"released {r.public_ip or r.allocation_id} from {r.node} ({r.reason})"

    def adopt(self, a: Adopt) -> str:
        node, eip = self.node(a.node), self.eip(a.allocation_id)
        if a.supersedes:
            # This closes another node's confirmed record on the word of one region-wide reading: look at
            # this one EIP again first (a stale reading may show where it was, not where it is).
            fresh = self.ec2.get_address(a.allocation_id)
            if fresh is None or fresh.eni_id != node.eni_id:
                self.outcomes[a.node] = Node.State.RELEASED if node.draining else Node.State.WAITING
                if self.holding_state(a.supersedes):
                    self.outcomes[a.supersedes] = self.holding_state(a.supersedes)
                return f"left {a.public_ip} to the next pass: AWS no longer shows it on {a.node}"
            if a.retaint_superseded:
                try:
                    self.kube.add_startup_taint(a.supersedes, settings.EIPDASH_STARTUP_TAINT)
                    self._tainted(a.supersedes)
                except KubeNotFound:
                    pass
        with transaction.atomic():
            if a.supersedes:
                Assignment.objects.filter(eip=eip, closed_at__isnull=True).update(
                    closed_at=timezone.now(), close_reason=f"superseded: EIP found on {a.node}",
                    close_kind=Assignment.CloseKind.MOVED,
                )
            mine = Assignment.objects.filter(eip=eip, node=node, closed_at__isnull=True).first()
            if mine is not None:
                services.assignment_confirm(assignment=mine, association_id=a.association_id)
            else:
                services.assignment_open(eip=eip, node=node, spec=self.spec, actor=self.actor,
                                         association_id=a.association_id, confirmed=True)
        # A claim an operator opened (a manual reassign whose worker stopped before AWS confirmed it): the
        # adoption finishes their move, and the history names them, not the system.
        services.event_record(kind=Event.Kind.ADOPTED, context=self.context(node=node, eip=eip), reason=a.reason,
                              actor=mine.actor if mine is not None else self.actor)
        return f"adopted {a.public_ip} on {a.node} ({a.reason})"

    # --- assignments: one at a time (a manual reassign), or in concurrent slices (a pass) ---------------

    def _claim(self, s: Assign) -> Assignment | None:
        """Open the claim (DB); None when another worker holds the EIP or the node (IntegrityError)."""
        try:
            return services.assignment_open(eip=self.eip(s.allocation_id), node=self.node(s.node), spec=self.spec,
                                            actor=self.actor)
        except IntegrityError:
            return None

    def _occupied(self, s: Assign, claim: Assignment, present: list[Address]) -> str | None:
        """AssociateAddress onto a private IP that already carries an EIP silently knocks that one off
        (AllowReassociation guards only the EIP being moved): the caller looked at the target right before.
        The line for the report when it is taken (the claim is closed), None when it is free."""
        present = [a for a in present if a.private_ip in (None, s.private_ip)]
        if not present:
            return None
        services.assignment_close(assignment=claim, reason="the node's private IP already carries an EIP",
                                  kind=Assignment.CloseKind.TRANSIENT)
        self.outcomes[s.node] = Node.State.WAITING
        return (f"skipped {s.public_ip} → {s.node}: its private IP already carries "
                f"{', '.join(a.public_ip for a in present)}")

    def _not_associated(self, claim: Assignment, exc: Ec2Error) -> None:
        """AssociateAddress failed. Only a real refusal says something about the EIP (it goes last in the
        free order); a throttle, a timeout or a call never sent says nothing, and the EIP keeps its turn."""
        transient = isinstance(exc, Throttled | Transient)
        reason = ("not sent: the pass reached its deadline" if isinstance(exc, OutOfTime)
                  else f"AWS {'call failed' if transient else 'refused'}: {exc.code or type(exc).__name__}")
        services.assignment_close(
            assignment=claim, reason=reason,
            kind=Assignment.CloseKind.TRANSIENT if transient else Assignment.CloseKind.REFUSED,
        )

    def _record_association(self, s: Assign, claim: Assignment, association_id: str,
                            confirmed: Address | None) -> str | None:
        """AWS answered AssociateAddress; `confirmed` is what DescribeAddresses shows now. Records it and
        returns None when confirmed, else the line for the report (the node keeps waiting)."""
        if confirmed is None or confirmed.eni_id != s.eni_id:
            # Leave the claim open: the next pass sees where AWS put it and adopts or closes it.
            self.outcomes[s.node] = Node.State.WAITING
            return f"assigned {s.public_ip} → {s.node}, not yet confirmed by AWS"
        if not services.assignment_confirm(assignment=claim, association_id=association_id):
            # The claim was closed meanwhile (a racing pass took it for stale): AWS has the association,
            # and the next pass adopts it from there.
            self.outcomes[s.node] = Node.State.WAITING
            return f"assigned {s.public_ip} → {s.node}; the record is repaired by the next pass"
        node, eip = self.node(s.node), self.eip(s.allocation_id)
        ElasticIP.objects.filter(pk=eip.pk).update(
            association_id=association_id, eni_id=s.eni_id, private_ip=s.private_ip,
            instance_id=confirmed.instance_id or node.instance_id,
        )
        self.record(Event.Kind.ASSIGNED, f"associated with {s.eni_id} ({s.private_ip})", node=node, eip=eip)
        return None

    def _ready_after(self, s: Assign) -> MarkReady:
        return MarkReady(s.node, s.allocation_id, s.public_ip, lift_taint=self.node(s.node).startup_tainted,
                         set_marks=True)

    def assign(self, s: Assign) -> str | None:
        """One assignment, every call in this thread (a manual reassign). Raises what failed."""
        claim = self._claim(s)
        if claim is None:
            return f"skipped {s.public_ip} → {s.node}: claimed by another worker"
        try:
            skipped = self._occupied(s, claim, self.ec2.addresses_on(eni_id=s.eni_id, private_ip=s.private_ip))
            if skipped:
                return skipped
            association_id = self.ec2.associate(
                allocation_id=s.allocation_id, eni_id=s.eni_id, private_ip=s.private_ip, allow_reassociation=False
            )
        except Ec2Error as exc:
            self._not_associated(claim, exc)
            raise
        unconfirmed = self._record_association(s, claim, association_id, self.ec2.get_address(s.allocation_id))
        if unconfirmed:
            return unconfirmed
        self.mark_ready(self._ready_after(s))
        return f"assigned {s.public_ip} → {s.node}"

    def slice_size(self, pending: int) -> int:
        """Roughly what the EC2 budget can serve soon: the tokens there now, or else a second of refill (at
        least a few, at most one batched read's worth). Small slices in a long burst confirm
        and untaint each node soon after its association, instead of after the whole burst."""
        tokens = budget.available(self.ec2.region, budget.MUTATE)
        return max(1, min(pending, FILTER_VALUES_LIMIT, max(4, int(tokens), int(settings.EIPDASH_EC2_MUTATE_RATE))))

    def assign_all(self, steps: Sequence[Assign]) -> None:
        pending = list(steps)
        while pending:
            self.check_lease()
            if self.out_of_time():
                for s in pending:
                    self.leave(f"assign {s.public_ip} to {s.node}", node=s.node, failed_state=Node.State.WAITING)
                return
            self.started_a_step = True
            size = self.slice_size(len(pending))
            # In allocation id order: the slice's transactions then lock ElasticIP rows in the order every
            # pass's snapshot write takes them (workers/observe.py), so concurrent passes never deadlock.
            self.assign_slice(sorted(pending[:size], key=lambda s: s.allocation_id))
            pending = pending[size:]

    def assign_slice(self, steps: Sequence[Assign]) -> None:
        """Claims, one look at the targets, AssociateAddress concurrently, one confirmation, the records,
        then the marks and taint lifts concurrently. Every item keeps the rules of a single assign()."""
        def what(s: Assign) -> str:
            return f"assign {s.public_ip} to {s.node}"

        def fail(s: Assign, exc: Exception) -> None:
            self.failed(what(s), exc, node=s.node, allocation_id=s.allocation_id, kind="assign",
                        failed_state=Node.State.WAITING)

        wanted = {s.allocation_id for s in steps} - self._eips.keys()
        self._eips.update((row.allocation_id, row) for row in ElasticIP.objects.filter(allocation_id__in=wanted))
        claimed: list[tuple[Assign, Assignment]] = []
        # One commit for the slice's claims (each in its own savepoint: a claim another worker holds is
        # skipped alone), committed before any AssociateAddress is sent.
        with transaction.atomic():
            for s in steps:
                try:
                    claim = self._claim(s)
                except DatabaseError as exc:
                    fail(s, exc)
                    continue
                if claim is None:
                    self.report.done.append(f"skipped {s.public_ip} → {s.node}: claimed by another worker")
                else:
                    claimed.append((s, claim))
        if not claimed:
            return

        def give_back(items: Iterable[tuple[Assign, Assignment]], exc: Ec2Error) -> None:
            """The association was not made (or not sent): close the claims; a call never sent is left."""
            for s, claim in items:
                self._not_associated(claim, exc)
                if isinstance(exc, OutOfTime):
                    self.leave(what(s), node=s.node, failed_state=Node.State.WAITING)
                else:
                    fail(s, exc)

        self.check_lease()
        try:
            present = self.ec2.addresses_on_enis(s.eni_id for s, _ in claimed)
        except Ec2Error as exc:
            give_back(claimed, exc)
            return
        free: list[tuple[Assign, Assignment]] = []
        for s, claim in claimed:
            skipped = self._occupied(s, claim, present.get(s.eni_id, []))
            if skipped:
                self.report.done.append(skipped)
            else:
                free.append((s, claim))

        def associate(s: Assign) -> str:
            # The lease fences each AWS write, as it did each step: a pass that lost it sends nothing more.
            self.check_lease()
            return self.ec2.associate(allocation_id=s.allocation_id, eni_id=s.eni_id, private_ip=s.private_ip,
                                      allow_reassociation=False)

        claims = dict(free)
        associated: list[tuple[Assign, Assignment, str]] = []
        lost: LeaseLost | None = None
        for outcome in self.concurrently(associate, [s for s, _ in free]):
            s = outcome.item
            if isinstance(outcome.error, LeaseLost):
                # Never sent: the claim goes (another pass has the spec now). Those AWS accepted stay open,
                # unconfirmed: the pass that holds the lease now finds them there and adopts them.
                services.assignment_close(assignment=claims[s], reason="not sent: the pass lost its lease",
                                          kind=Assignment.CloseKind.TRANSIENT)
                lost = outcome.error
            elif isinstance(outcome.error, Ec2Error):
                give_back([(s, claims[s])], outcome.error)
            elif outcome.value is not None:
                associated.append((s, claims[s], outcome.value))
        if lost is not None:
            raise lost
        if not associated:
            return

        # The associations are made: finishing them (confirm, label, lift) may wait a little past the deadline.
        try:
            with budget.deadline(self.grace_deadline()):
                seen = self.ec2.get_addresses(s.allocation_id for s, _, _ in associated)
        except Ec2Error as exc:
            # The claims stay open: the next pass sees where AWS put each EIP and adopts or closes it.
            for s, _, _ in associated:
                fail(s, exc)
            return
        marks: list[tuple[Assign, MarkReady]] = []
        with transaction.atomic():  # one commit for the slice's records, one savepoint each
            for s, claim, association_id in associated:
                try:
                    with transaction.atomic():
                        unconfirmed = self._record_association(s, claim, association_id, seen.get(s.allocation_id))
                except DatabaseError as exc:
                    fail(s, exc)
                    continue
                if unconfirmed:
                    self.report.done.append(unconfirmed)
                else:
                    marks.append((s, self._ready_after(s)))
        for s, marked in zip((s for s, _ in marks), self.mark_many([m for _, m in marks]), strict=True):
            if marked.error is not None:
                fail(s, marked.error)
            else:
                self.report.done.append(f"assigned {s.public_ip} → {s.node}")

    # --- the Kubernetes side: taints and ready marks, concurrently ---------------------------------------

    def taint_all(self, names: Sequence[str]) -> None:
        """I1: every node of the spec that could take pods and holds no EIP gets the startup taint back.
        Never limited by the deadline."""
        if not names:
            return
        self.check_lease()
        taint = settings.EIPDASH_STARTUP_TAINT
        for outcome in self.concurrently(lambda name: self.kube.add_startup_taint(name, taint), list(names)):
            name = outcome.item
            what = f"add the startup taint to {name}"
            try:
                if outcome.error is not None:
                    raise outcome.error
                self._tainted(name)
            except (KubeError, DatabaseError) as exc:
                self.failed(what, exc, node=name, kind="taint")
                continue
            if outcome.value:
                self.report.done.append(f"added the startup taint to {name}: schedulable without an EIP")

    def ready_all(self, steps: Sequence[MarkReady]) -> None:
        pending = list(steps)
        while pending:
            self.check_lease()
            if self.out_of_time():
                for m in pending:
                    self.leave(f"make {m.node} ready", node=m.node,
                               failed_state=Node.State.WAITING if m.lift_taint else "")
                return
            self.started_a_step = True
            batch, pending = pending[:READY_SLICE], pending[READY_SLICE:]
            for m, outcome in zip(batch, self.mark_many(batch), strict=True):
                if outcome.error is not None:
                    self.failed(f"make {m.node} ready", outcome.error, node=m.node, allocation_id=m.allocation_id,
                                kind="ready", failed_state=Node.State.WAITING if m.lift_taint else "")
                elif outcome.value:
                    self.report.done.append(outcome.value)

    def mark_many(self, steps: Sequence[MarkReady]) -> list[Outcome[MarkReady, str]]:
        """mark_ready for many nodes: the Kubernetes patches concurrently, the records here. Each outcome's
        value is mark_ready's line ("" for none); its error a KubeError or DatabaseError (not recorded)."""
        if not steps:
            return []
        self.check_lease()
        expected = {m.node: self.node(m.node).instance_id or None for m in steps}
        results: list[Outcome[MarkReady, str]] = []
        outcomes = self.concurrently(lambda m: self._mark_kube(m, expected[m.node]), list(steps))
        with transaction.atomic():  # one commit for the records, one savepoint each
            for outcome in outcomes:
                m = outcome.item
                if isinstance(outcome.error, Replaced):
                    self._mark_replaced(m, expected[m.node], outcome.error)
                    results.append(Outcome(m, value=""))
                elif outcome.error is not None:
                    results.append(Outcome(m, error=outcome.error))
                else:
                    try:
                        with transaction.atomic():
                            line = self._mark_record(m, lifted=bool(outcome.value))
                        results.append(Outcome(m, value=line or ""))
                    except DatabaseError as exc:
                        results.append(Outcome(m, error=exc))
        return results

    def unmark(self, name: str) -> str:
        self.kube.clear_eip_marks(name, instance_id=self.incarnation(name))
        Node.objects.filter(cluster=self.spec.cluster, name=name).update(eip_label="")
        return f"removed the stale EIP label of {name}"

    def mark_ready(self, m: MarkReady) -> str | None:
        """Only called once AWS shows the EIP on the node's ENI."""
        # The EIP is on the ENI of the instance this pass observed; if the name now belongs to another
        # instance (replaced meanwhile), that new node holds no EIP and keeps its taint (I1). The next pass
        # releases the EIP from the dead instance and serves the new node like any new one.
        expected = self.node(m.node).instance_id or None
        try:
            lifted = self._mark_kube(m, expected)
        except Replaced as exc:
            self._mark_replaced(m, expected, exc)
            return None
        return self._mark_record(m, lifted=lifted)

    def _mark_kube(self, m: MarkReady, expected: str | None) -> bool:
        """The Kubernetes half of mark_ready (any thread): label and annotate, lift the taint; both at once
        in one read and one patch when both are due."""
        if m.set_marks and m.lift_taint:
            return self.kube.mark_ready(m.node, public_ip=m.public_ip, allocation_id=m.allocation_id,
                                        taint_key=settings.EIPDASH_STARTUP_TAINT, instance_id=expected)
        if m.set_marks:
            self.kube.set_eip_marks(m.node, public_ip=m.public_ip, allocation_id=m.allocation_id,
                                    instance_id=expected)
        return m.lift_taint and self.kube.lift_startup_taint(m.node, settings.EIPDASH_STARTUP_TAINT,
                                                             instance_id=expected)

    def _mark_replaced(self, m: MarkReady, expected: str | None, exc: Replaced) -> None:
        self.outcomes[m.node] = Node.State.WAITING
        log.warning("%s: %s", self.spec.name, exc, extra=log_fields(spec=self.spec.name, node=m.node,
                                                                    allocation_id=m.allocation_id))
        # In the report even when called from an assignment, whose own line would say all went well.
        self.report.done.append(
            f"did not mark {m.node} ready: the name now belongs to another instance than {expected}, which "
            f"holds no EIP ({m.public_ip} goes back to the pool on the next pass)")

    def _mark_record(self, m: MarkReady, *, lifted: bool) -> str | None:
        """The database half of mark_ready (the pass's thread)."""
        node = self.node(m.node)
        ready_at = timezone.now()
        if Node.objects.filter(pk=node.pk, eip_ready_at__isnull=True).update(eip_ready_at=ready_at):
            # Once per node (the row's first ready time), like the dashboard's time to EIP.
            metrics.TIME_TO_EIP.observe(max(0.0, (ready_at - node.first_seen_at).total_seconds()))
        Node.objects.filter(pk=node.pk).update(state=Node.State.READY, startup_tainted=False, eip_label=m.public_ip)
        if lifted:
            self.record(Event.Kind.TAINT_LIFTED, f"{m.public_ip} confirmed on the node's ENI", node=node,
                        eip=self.eip(m.allocation_id))
            return f"lifted the startup taint of {m.node}"
        return None
