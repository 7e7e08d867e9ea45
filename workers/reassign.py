"""Manual reassign: an operator moves a pool EIP to another node of the same launch spec.

It runs on a worker (`workers.tasks.reassign`), which holds the AWS and Kubernetes rights; the web only
records the operator's `ReassignRequest` and shows its outcome. It follows the planner's rules, the one
exception to them being the point of the feature: the EIP leaves a node that may still run pods (I2 allows
an operator's explicit move).

The move, under the spec's lease (the one the passes take), each write preceded by a lease check:

1. re-read AWS and Kubernetes (the same refresh as a pass) and decide on that, not on what the page showed;
2. refuse unless AWS shows the EIP free, or on the primary private IP of the primary ENI of a node of the
   same spec with a confirmed record: never off a bastion, another ENI, another spec's node, an EIP in
   `conflict`, an EIP or a node claimed by two specs, or onto a node that holds an EIP or drains;
3. put the startup taint back on the old node (resourceVersion precondition) so that it is never
   schedulable without an EIP (I1);
4. DisassociateAddress from the old node explicitly (AllowReassociation stays False: a racing
   association is refused by AWS instead of silently knocked off), close its record;
5. the passes' own assign path onto the target (workers/steps/assign.py, a slice of one): claim, a look at
   the target, AssociateAddress, a targeted DescribeAddresses to confirm, record, label, lift its taint;
6. a pass of the spec under the same lease: the old node gets another free EIP if there is one.

No database transaction is open across an AWS or Kubernetes call; every write is fenced by the lease's
number, every Kubernetes write carries it, and every change to AWS is guarded and bumps the region's
sequence, as in a pass (workers/pass_context.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from pools import services
from pools.locks import Lease, LeaseLost
from pools.logs import log_fields
from pools.models import Assignment, ElasticIP, Event, LaunchSpec, Node, ReassignRequest
from pools.planner import Assign, node_is_servable, unserved_reason
from pools.pool_rule import selects, specs_selecting
from pools.snapshot import neighbour_specs, node_view_of

from . import kube_events
from .ec2 import AlreadyAssociated, Ec2, Ec2Error, Permanent, guarded
from .executor import clients_for, holding, run_pass
from .kube import Kube, KubeError
from .kube import NotFound as KubeNotFound
from .observe import refresh_snapshot
from .pass_context import PassContext
from .steps.assign import assign_slice

log = logging.getLogger(__name__)

# How long a pass may keep the spec before the move gives up waiting for it.
LEASE_WAIT_SECONDS = 15.0
# A request no worker picked up within this time is refused, not run: the operator decided on a world
# that is that old, and may have left.
REQUEST_MAX_WAIT = timedelta(minutes=5)


class ReassignRefused(Exception):
    """The move was not made and nothing was changed; the message says why, for the person who asked."""


class ReassignFailed(Exception):
    """The move broke off after a change; the message says where things stand. The next pass repairs
    the record from what AWS shows, and serves any node left without an EIP."""


@dataclass(frozen=True)
class ReassignOutcome:
    message: str
    confirmed: bool


@dataclass(frozen=True)
class _Move:
    spec: LaunchSpec
    eip: ElasticIP
    target: Node
    old: Assignment | None  # the confirmed record of the node that holds the EIP now, if any


# --- the rules ------------------------------------------------------------------------------------


def _target_and_spec(eip: ElasticIP, node_name: str) -> tuple[Node, LaunchSpec]:
    # Node names repeat across clusters: only a node of the EIP's region can take it.
    candidates = list(Node.objects.select_related("cluster", "launch_spec__cluster").filter(
        name=node_name, launch_spec__cluster__region=eip.region))
    if not candidates:
        raise ReassignRefused(f"Node {node_name} is not a node of any launch spec of {eip.region}.")
    if len(candidates) > 1:
        # The EIP's own spec decides which cluster's node is meant (a pool selected by two specs is refused
        # later as a conflict, whichever node is taken here).
        own = [n for n in candidates if n.launch_spec is not None and selects(n.launch_spec, eip.tags)]
        candidates = own if len(own) == 1 else candidates
    if len(candidates) > 1:
        clusters = ", ".join(sorted(n.cluster.name for n in candidates))
        raise ReassignRefused(f"Node name {node_name} exists in several clusters of {eip.region} ({clusters}).")
    target = candidates[0]
    assert target.launch_spec is not None
    return target, target.launch_spec


def _check(spec: LaunchSpec, eip: ElasticIP, target: Node, asked_at: datetime | None = None) -> _Move:
    """The rules, on the rows the refresh just wrote. Raises ReassignRefused; changes nothing.

    asked_at: when the operator asked. An EIP that went to another node since then is not moved: the
    operator confirmed taking it off the node the page showed, not off whichever holds it now.
    """
    _check_eip(spec, eip, target)
    _check_target(spec, eip, target)
    return _Move(spec, eip, target, _where_it_is(spec, eip, asked_at))


def _check_eip(spec: LaunchSpec, eip: ElasticIP, target: Node) -> None:
    ip = eip.public_ip
    if eip.gone:
        raise ReassignRefused(f"{ip} left the pool meanwhile (untagged or released in AWS).")
    if not selects(spec, eip.tags):
        raise ReassignRefused(f"{ip} is not in the pool of {spec.name}, the launch spec of {target.name}.")
    if not spec.enabled:
        raise ReassignRefused(f"Launch spec {spec.name} is disabled: it drains and takes no new EIP.")
    if rivals := [s.name for s in specs_selecting(eip.tags, neighbour_specs(spec))]:
        raise ReassignRefused(f"{ip} is also selected by launch spec(s) {', '.join(rivals)}: a conflict that "
                              "eipdash leaves alone until the selectors are fixed.")


def _check_target(spec: LaunchSpec, eip: ElasticIP, target: Node) -> None:
    """The target, judged by the planner's own rules: it must be a node the planner would serve."""
    name = target.name
    view = node_view_of(target, spec)
    if target.launch_spec_id != spec.pk:
        raise ReassignRefused(f"{name} no longer matches launch spec {spec.name}.")
    if (reason := unserved_reason(view)) is not None:
        raise ReassignRefused(f"{name} {reason}.")
    if not node_is_servable(view):
        raise ReassignRefused(f"{name} has no primary private IPv4 on a primary ENI yet.")
    if eip.eni_id and eip.eni_id == target.eni_id:
        raise ReassignRefused(f"{eip.public_ip} is already on {name}.")
    held = Assignment.objects.filter(node=target, closed_at__isnull=True).select_related("eip").first()
    on_target = ElasticIP.objects.filter(eni_id=target.eni_id, gone=False).exclude(eni_id="").first()
    if held is not None or on_target is not None:
        other = held.eip.public_ip if held else on_target.public_ip if on_target else ""
        raise ReassignRefused(f"{name} already has an EIP ({other}).")


def _where_it_is(spec: LaunchSpec, eip: ElasticIP, asked_at: datetime | None) -> Assignment | None:
    """Where the EIP is now: free (None), or on the primary address of a node of this spec that we recorded
    (its confirmed record)."""
    ip = eip.public_ip
    old = Assignment.objects.filter(eip=eip, closed_at__isnull=True).select_related("node", "node__cluster").first()
    if not eip.association_id:
        if old is not None:
            raise ReassignRefused(f"The record has {ip} on {old.node.name} but AWS shows it free; the next pass "
                                  "repairs the record. Try again then.")
        return None
    holder = Node.objects.filter(cluster=spec.cluster, eni_id=eip.eni_id, private_ip=eip.private_ip).first()
    where = f"{eip.eni_id or '?'} {eip.private_ip}{f' ({eip.instance_id})' if eip.instance_id else ''}"
    if holder is None:
        raise ReassignRefused(f"AWS shows {ip} on {where}, which is not the primary address of a node of "
                              f"{spec.name}: eipdash never takes an EIP off something that is not its node.")
    if holder.launch_spec_id != spec.pk:
        raise ReassignRefused(f"AWS shows {ip} on {holder.name}, which is not a node of {spec.name}.")
    if old is None or old.node_id != holder.pk:
        recorded = f"the record says {old.node.name}" if old else "eipdash has no record of it"
        raise ReassignRefused(f"{ip} is in conflict: AWS shows it on {holder.name} and {recorded}. The next pass "
                              "adopts it or reports the conflict; eipdash does not move it by hand meanwhile.")
    if old.confirmed_at is None:
        raise ReassignRefused(f"{ip} is being assigned to {holder.name} right now; try again in a few seconds.")
    if asked_at is not None and old.opened_at > asked_at:
        raise ReassignRefused(f"{ip} went to {holder.name} after you asked ({old.actor}); nothing was changed. "
                              "Look at the EIP again and ask anew.")
    return old


# --- the move -------------------------------------------------------------------------------------


def reassign_eip(*, allocation_id: str, node_name: str, actor: str, ec2: Ec2 | None = None,
                 kube: Kube | None = None, lease_wait: float = LEASE_WAIT_SECONDS,
                 asked_at: datetime | None = None) -> ReassignOutcome:
    """Move a pool EIP to another node of its spec, by hand. Raises ReassignRefused (nothing changed) or
    ReassignFailed (broke off after a change; the message says where things stand)."""
    eip = ElasticIP.objects.filter(allocation_id=allocation_id).first()
    if eip is None or eip.gone:
        raise ReassignRefused(f"EIP {allocation_id} is not in any pool any more.")
    target, spec = _target_and_spec(eip, node_name)
    if ec2 is None or kube is None:
        default_ec2, default_kube = clients_for(spec)
        ec2, kube = ec2 or default_ec2, kube or default_kube

    with holding(spec.pk, wait_seconds=lease_wait) as lease:
        if lease is None:
            raise ReassignRefused("A reconcile pass of this launch spec is running; try again in a few seconds.")
        try:
            refresh_snapshot(spec, ec2, kube, fenced=lease.fenced)
        except (Ec2Error, KubeError) as exc:
            _error(spec, target, eip, actor, f"manual reassign: reading AWS and Kubernetes failed: {_say(exc)}")
            raise ReassignRefused(f"Could not read AWS and Kubernetes ({_say(exc)}); nothing was changed.") from exc
        eip.refresh_from_db()
        target.refresh_from_db()
        move = _check(spec, eip, target, asked_at)
        ctx = PassContext(spec, ec2, kube, actor=actor, lease=lease)
        try:
            with guarded(ctx.send_guard):
                outcome = _move(ctx, move)
        except LeaseLost as exc:
            _error(spec, target, eip, actor, f"manual reassign stopped: {exc}")
            raise ReassignFailed(f"The move stopped halfway: {exc}. The next pass repairs the record from AWS "
                                 "and serves any node left without an EIP.") from exc
        finally:
            ctx.close()
        return ReassignOutcome(outcome.message + _follow_up(spec, ec2=ec2, kube=kube, lease=lease),
                               outcome.confirmed)


def _still_on(ec2: Ec2, allocation_id: str, eni_id: str) -> bool:
    """A fresh DescribeAddresses of this one EIP shows it on this ENI (False when it cannot be read)."""
    try:
        fresh = ec2.get_address(allocation_id)
    except Ec2Error:
        return False
    return bool(eni_id and fresh is not None and fresh.association_id and fresh.eni_id == eni_id)


def _move(ctx: PassContext, move: _Move) -> ReassignOutcome:
    if move.old is not None:
        _take_off_old_node(ctx, move, move.old)
    return _put_on_target(ctx, move)


def _take_off_old_node(ctx: PassContext, move: _Move, old: Assignment) -> None:
    """3. The old node is never schedulable without an EIP: the taint goes back on before the EIP leaves.
    4. Off the old node, explicitly; its record closes."""
    eip, target, old_node = move.eip, move.target, old.node
    tainted_now = False
    if old_node.deleted_at is None:
        ctx.check()
        try:
            tainted_now = ctx.kube.add_startup_taint(old_node.name, settings.EIPDASH_STARTUP_TAINT, fence=ctx.fence)
        except KubeNotFound:
            pass  # deleted meanwhile: nothing can be scheduled on it
        except KubeError as exc:
            if isinstance(exc, LeaseLost):
                raise
            ctx.record(Event.Kind.ERROR, f"manual reassign: could not taint {old_node.name}: {_say(exc)}",
                       node=old_node, eip=eip)
            raise ReassignRefused(f"Could not put the startup taint back on {old_node.name} ({_say(exc)}); "
                                  "nothing was moved.") from exc
        ctx.tainted(old_node.name)
        if tainted_now:
            kube_events.taint_added(ctx.spec.cluster, old_node.name, f"its EIP moves by hand to {target.name}")
    ctx.check()
    try:
        with ctx.aws_change():
            ctx.ec2.disassociate(eip.association_id)
    except Ec2Error as exc:
        _disassociation_failed(ctx, move, old, exc, tainted_now)
    with ctx.fenced():
        services.assignment_close(assignment=old, reason=f"moved by hand to {target.name} by {ctx.actor}")
        ElasticIP.objects.filter(pk=eip.pk).update(association_id="", eni_id="", instance_id="", private_ip="")
        services.region_addresses_written(region=eip.region)
        Node.objects.filter(pk=old_node.pk).update(state=Node.State.WAITING, eip_label="")
    ctx.record(Event.Kind.RELEASED, f"taken off by hand for {target.name}", node=old_node, eip=eip)
    if old_node.deleted_at is None:
        try:
            ctx.kube.clear_eip_marks(old_node.name, instance_id=old_node.instance_id or None, fence=ctx.fence)
        except KubeError as exc:
            if isinstance(exc, LeaseLost):
                raise
            ctx.record(Event.Kind.ERROR, f"manual reassign: could not clear the EIP label: {_say(exc)}",
                       node=old_node, eip=eip)


def _disassociation_failed(ctx: PassContext, move: _Move, old: Assignment, exc: Ec2Error, tainted_now: bool) -> None:
    """Only a refusal proves nothing changed: a throttle or a timeout (retries exhausted, a 500 after AWS did
    it) may hide a disassociation, and lifting the taint then would leave the old node schedulable without an
    EIP (I1). Even a refusal is checked against AWS before the lift. Always raises."""
    eip, old_node = move.eip, old.node
    still_there = isinstance(exc, Permanent | AlreadyAssociated) and _still_on(
        ctx.ec2, eip.allocation_id, old.eni_id or old_node.eni_id)
    if not still_there:
        ctx.record(Event.Kind.ERROR, f"manual reassign: disassociating failed, the EIP may have been moved: "
                                     f"{_say(exc)}", node=old_node, eip=eip)
        raise ReassignFailed(f"Taking {eip.public_ip} off {old_node.name} failed ({_say(exc)}); it may have been "
                             f"moved. {old_node.name} stays tainted; the next pass settles it (it lifts the taint "
                             "if AWS still shows the EIP there).") from exc
    ctx.record(Event.Kind.ERROR, f"manual reassign: AWS refused to disassociate: {_say(exc)}", node=old_node, eip=eip)
    if tainted_now:
        try:
            ctx.kube.lift_startup_taint(old_node.name, settings.EIPDASH_STARTUP_TAINT,
                                        instance_id=old_node.instance_id or None, fence=ctx.fence)
        except KubeError:
            pass  # the next pass lifts it: the node holds its confirmed EIP
    raise ReassignRefused(f"AWS refused to take {eip.public_ip} off {old_node.name} ({_say(exc)}); nothing was "
                          "moved.") from exc


def _put_on_target(ctx: PassContext, move: _Move) -> ReassignOutcome:
    """5. Onto the target: the passes' own assign path (a slice of one)."""
    eip, target = move.eip, move.target
    old_node = move.old.node if move.old is not None else None
    lost = f"{old_node.name} lost it and gets a free EIP on the next pass, if any." if old_node else ""
    ctx.check()
    step = Assign(eip.allocation_id, eip.public_ip, target.name, target.eni_id, target.private_ip)
    (result,) = assign_slice(ctx, [step])
    claim = Assignment.objects.filter(eip=eip, node=target, closed_at__isnull=True).first()
    error = result.error
    if isinstance(error, Ec2Error):
        if claim is not None:
            # The claim is still open: AWS may have accepted the association, and reading it back failed.
            raise ReassignFailed(f"AWS accepted the move of {eip.public_ip} to {target.name}, but reading it back "
                                 f"failed ({_say(error)}); the next pass confirms it and records it in your "
                                 "name.") from error
        raise ReassignFailed(f"AWS refused to put {eip.public_ip} on {target.name} ({_say(error)}). {lost}") from error
    if claim is None:
        raise ReassignFailed(f"{eip.public_ip} was not put on {target.name}: {result.line or result.state}. {lost}")
    reason = f"moved by hand from {old_node.name if old_node else 'no node'} to {target.name}"
    ctx.record(Event.Kind.REASSIGNED, reason, node=target, eip=eip)
    if claim.confirmed_at is None:
        return ReassignOutcome(f"{eip.public_ip} is on its way to {target.name}; AWS has not confirmed it yet, "
                               "the next pass records it.", confirmed=False)
    if error is not None:
        # AWS has the association; the label or the taint is left to the next pass, which sees it there.
        return ReassignOutcome(f"{eip.public_ip} moved to {target.name}; the node's label and taint follow on the "
                               f"next pass ({_say(error)}).", confirmed=True)
    return ReassignOutcome(f"{eip.public_ip} moved to {target.name}.", confirmed=True)


def _follow_up(spec: LaunchSpec, *, ec2: Ec2, kube: Kube, lease: Lease) -> str:
    """6. A pass right away, under the same lease: the old node waits like a new one. Its failure is
    told, never raised: the move itself is done, and the beat's next pass retries."""
    try:
        report = run_pass(spec, ec2=ec2, kube=kube, lease=lease)
    except (Ec2Error, KubeError, DatabaseError) as exc:
        services.event_record(kind=Event.Kind.ERROR, context=services.event_context(spec=spec),
                              reason=f"the pass after a manual reassign failed: {_say(exc)}")
        return f" The pass that serves the old node failed ({_say(exc)}); the next one retries."
    if report.errors:
        return f" The pass that serves the old node had errors: {'; '.join(report.errors)}"
    return ""


def _say(exc: Exception) -> str:
    code = getattr(exc, "code", "")
    return f"{type(exc).__name__}{f' {code}' if code else ''}: {exc}"


def _record(kind: str, spec: LaunchSpec, node: Node | None, eip: ElasticIP, actor: str, reason: str) -> None:
    services.event_record(kind=kind, context=services.event_context(spec=spec, node=node, eip=eip),
                          reason=reason, actor=actor)


def _error(spec: LaunchSpec, node: Node | None, eip: ElasticIP, actor: str, reason: str) -> None:
    _record(Event.Kind.ERROR, spec, node, eip, actor, reason)


# --- the request, as the task runs it --------------------------------------------------------------


def expire_stale_requests() -> int:
    """Requests whose worker is gone end as failed (or refused, if never picked up): run by the beat."""
    now = timezone.now()
    # Past the hard time limit the worker process was killed; the margin covers a slow clock or a slow DB.
    running_limit = timedelta(seconds=int(settings.CELERY_TASK_TIME_LIMIT) + 30)
    return services.reassign_request_expire(started_before=now - running_limit,
                                            created_before=now - REQUEST_MAX_WAIT - timedelta(minutes=1))



def run_request(request_id: int, *, ec2: Ec2 | None = None, kube: Kube | None = None) -> str:
    """Carry out one ReassignRequest and write its outcome on it. Never raises for the move's sake: every
    outcome, an unexpected error included, ends as a finished request the operator can read."""
    if not services.reassign_request_start(request_id=request_id):
        return f"reassign request {request_id}: already handled"
    request = ReassignRequest.objects.select_related("eip").get(pk=request_id)
    state, message = ReassignRequest.State.FAILED, "the worker stopped before the move ended"
    try:
        waited = timezone.now() - request.created_at
        if waited > REQUEST_MAX_WAIT:
            state, message = ReassignRequest.State.REFUSED, (
                f"No worker picked this request up for {int(waited.total_seconds())} s; nothing was changed. "
                "Look at the EIP again and ask anew.")
        else:
            outcome = reassign_eip(allocation_id=request.eip.allocation_id, node_name=request.node_name,
                                   actor=request.actor, ec2=ec2, kube=kube, asked_at=request.created_at)
            state, message = ReassignRequest.State.DONE, outcome.message
    except ReassignRefused as exc:
        state, message = ReassignRequest.State.REFUSED, str(exc)
    except ReassignFailed as exc:
        state, message = ReassignRequest.State.FAILED, str(exc)
    except Exception as exc:  # the operator must see an answer whatever broke (time limit included)
        log.exception("reassign request %s", request_id, extra=log_fields(
            node=request.node_name, ip=request.eip.public_ip, allocation_id=request.eip.allocation_id))
        state, message = ReassignRequest.State.FAILED, (
            f"The move broke off: {_say(exc)}. The next pass repairs the record from AWS.")
        try:
            services.event_record(kind=Event.Kind.ERROR, actor=request.actor,
                                  context=services.EventContext(region=request.eip.region,
                                                                public_ip=request.eip.public_ip,
                                                                allocation_id=request.eip.allocation_id,
                                                                node=request.node_name),
                                  reason=f"manual reassign broke off: {_say(exc)}")
        except DatabaseError:
            log.exception("reassign request %s: could not record the error", request_id)
    finally:
        services.reassign_request_finish(request_id=request_id, state=state, message=message)
    return f"reassign request {request_id}: {state}: {message}"
