"""Assigning free EIPs to waiting nodes, in slices: the one assign path of a pass and of a manual reassign.

A slice: claims in the database (one commit); one DescribeInstances of the targets (a terminated instance
whose node is still listed gets nothing) and one DescribeAddresses of what is already on the target ENIs, both
at once; AssociateAddress concurrently; then each node on its own as soon as its call returns: its confirmation
(one DescribeAddresses for the calls that returned meanwhile), the record, its labels and taint lift, so that no
node waits for the slowest call of its slice. Every item keeps the invariants:
- I3: one open claim per EIP and per node (the database), AllowReassociation=False, no association onto a
  private IP that already carries an EIP (AWS would silently knock it off), never the same target twice in a
  slice (two Node objects of one instance), and each attempt guarded by the lease right before it is sent;
- I4: each attempt is sent only while the slice's look at its targets is at most LOOK_FRESH_SECONDS old;
- an AssociateAddress whose outcome is unknown (a timeout, a 5xx, a stop before a retry) leaves its claim
  open: the next pass finds the EIP on the node and adopts it, or, once no call of this pass can still land,
  closes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError

from pools import services
from pools.locks import LeaseLost
from pools.models import Assignment, ElasticIP, Event, Node
from pools.planner import Assign, MarkReady
from pools.vocabulary import LIVE_STATES

from .. import budget
from ..ec2 import FILTER_VALUES_LIMIT, Address, Ec2Error, Instance, NotFound, OutOfTime, Throttled, Transient, guarded
from ..pass_context import Outcome, PassContext
from .ready import mark_on_node, marked

# AWS's error codes that say the target node is gone, not that the EIP was refused.
NODE_GONE_CODES = frozenset({"InvalidNetworkInterfaceID.NotFound", "InvalidInstanceID.NotFound"})

# How old the slice's look at its targets may be when an AssociateAddress is sent. A wait for EC2 tokens, or a
# Redis that does not answer, can put seconds between the look and a call, and a spot interruption can end the
# instance meanwhile while its Node stays listed (seen in the fault campaign: a call sent 4 s after its look
# landed on an instance dead for 3 s). Such a call is not sent: its node waits for the next slice, which looks
# again. A slice is sized to the tokens there or a second of refill, so a burst's calls go out well within it.
LOOK_FRESH_SECONDS = 2.0
# How far ahead a slice reserves the budget's refill (workers/budget.py): its last call waits at most that long for
# its token, while the claims and the look (a few hundred milliseconds) run, well within LOOK_FRESH_SECONDS.
REFILL_BORROW_SECONDS = 1.0


@dataclass(frozen=True)
class Result:
    """How one assignment of a slice ended: assigned (confirmed, marked), unconfirmed (the claim stays open),
    skipped (not sent: the target or the EIP was taken), failed (`error`), or left (not sent: the deadline, or
    a look at the target too old to send on)."""

    step: Assign
    state: str
    line: str = ""
    error: Exception | None = None


def what(s: Assign) -> str:
    return f"assign {s.public_ip} to {s.node}"


def assign_all(ctx: PassContext, steps: Sequence[Assign]) -> None:
    """Slice after slice, each done before the next is looked at: a slice's calls never wait in the pool behind
    another slice's confirmations and marks (their look at the target would grow old, LOOK_FRESH_SECONDS)."""
    pending = list(steps)
    while pending:
        ctx.check()
        try:
            tokens = None if ctx.out_of_time() else reserve_slice(ctx, len(pending))
        except budget.OutOfTime:
            tokens = None
        if tokens is None:
            for s in pending:
                ctx.leave(what(s), node=s.node, failed_state=Node.State.WAITING)
            return
        ctx.started_a_step = True
        # In allocation id order: the slice's transactions then lock ElasticIP rows in the order every pass's
        # snapshot write takes them (workers/observe.py), so concurrent passes never deadlock.
        with budget.spending(tokens):
            for result in assign_slice(ctx, sorted(pending[:tokens.count], key=lambda s: s.allocation_id)):
                if result.line:
                    ctx.report.done.append(result.line)
        pending = pending[tokens.count:]


def reserve_slice(ctx: PassContext, pending: int) -> budget.Reservation:
    """The next slice's tokens, held before its claims: as many as the EC2 budget has, plus what it refills in the
    next REFILL_BORROW_SECONDS (at most four rounds of the pool; at least a few, or a second of refill, once there).
    Reserved, not just looked at: the passes of other specs of the region (other workers) size their slices from
    what is left, so no slice's calls queue for tokens that others spend. The borrowed tokens come due while the
    slice claims and looks at its targets, so its calls still go out well within LOOK_FRESH_SECONDS of the look.
    Small slices in a long burst confirm and untaint each node soon after its association, instead of after the
    whole burst. OutOfTime: none before the deadline."""
    # At most four rounds of the pool: the slice's last call must go out within LOOK_FRESH_SECONDS of its look.
    # (EC2's own bucket holds 50 tokens, so this bounds only a larger budget, or none: a slice of 200 sent by 16
    # threads on a busy host left most of its calls unsent, each pass again.)
    most = min(FILTER_VALUES_LIMIT, 4 * settings.EIPDASH_STEP_CONCURRENCY)
    return budget.reserve(ctx.ec2.region, budget.MUTATE, min(pending, most),
                          max(4, int(settings.EIPDASH_EC2_MUTATE_RATE)), borrow_seconds=REFILL_BORROW_SECONDS)


def assign_slice(ctx: PassContext, steps: Sequence[Assign]) -> list[Result]:
    """Claims, a look at the targets, AssociateAddress concurrently; then each node on its own as soon as its own
    call returns: its confirmation, record and marks (_Flow)."""
    flow = _Flow(ctx)
    results = flow.results
    ctx.load_eips(s.allocation_id for s in steps)
    claimed = open_claims(ctx, distinct_targets(steps, results), results)
    try:
        looked_at = time.monotonic()
        free = look_at_targets(ctx, claimed, results)
        associate(ctx, flow, free, looked_at)
        flow.drain()
    except LeaseLost:
        unsent = [(s, claim) for s, claim in claimed if s not in results]
        give_back_unsent(ctx, unsent)
        raise
    return [flow.result(s) for s in steps]


def distinct_targets(steps: Sequence[Assign], results: dict[Assign, Result]) -> list[Assign]:
    """Never the same (ENI, private IP) twice in a slice: two Node objects of one instance (a kubelet that
    registered again under a new name, the old object left NotReady) must not both get an EIP."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for s in steps:
        target = (s.eni_id, s.private_ip)
        if target in seen:
            results[s] = Result(s, "skipped", f"skipped {s.public_ip} → {s.node}: another node of the slice has "
                                              f"the same address ({s.eni_id} {s.private_ip})")
            continue
        seen.add(target)
        kept.append(s)
    return kept


def open_claims(ctx: PassContext, steps: Sequence[Assign],
                results: dict[Assign, Result]) -> list[tuple[Assign, Assignment]]:
    """One commit for the slice's claims (each in its own savepoint: a claim another worker holds is skipped
    alone), committed before any AssociateAddress is sent."""
    claimed: list[tuple[Assign, Assignment]] = []
    with ctx.fenced():
        for s in steps:
            try:
                claim = services.assignment_open(eip=ctx.eip(s.allocation_id), node=ctx.node(s.node), spec=ctx.spec,
                                                 actor=ctx.actor, fence=ctx.lease.fence if ctx.lease else 0)
            except IntegrityError:
                results[s] = Result(s, "skipped", f"skipped {s.public_ip} → {s.node}: claimed by another worker")
            except DatabaseError as exc:
                fail(ctx, results, s, exc)
            else:
                claimed.append((s, claim))
    return claimed


def look_at_targets(ctx: PassContext, claimed: list[tuple[Assign, Assignment]],
                    results: dict[Assign, Result]) -> list[tuple[Assign, Assignment]]:
    """Right before associating: the targets' instances still run with that primary address (a terminated
    instance's node may stay listed for minutes), and their private IPs carry no EIP yet."""
    if not claimed:
        return []
    ctx.check()
    # The two reads at once (each is a round trip to EC2): the slice's first call goes out that much sooner.
    described = ctx.submit(ctx.ec2.describe_instances, {ctx.node(s.node).instance_id for s, _ in claimed} - {""})
    try:
        present = ctx.ec2.addresses_on_enis(s.eni_id for s, _ in claimed)
    except Ec2Error as exc:
        give_back(ctx, claimed, exc, results)
        return []
    look = described.result()
    if isinstance(look.error, Ec2Error):
        give_back(ctx, claimed, look.error, results)
        return []
    if look.error is not None:
        raise look.error  # a lost lease, as if read in this thread
    instances = look.value or {}
    free = []
    for s, claim in claimed:
        gone = gone_reason(s, instances.get(ctx.node(s.node).instance_id))
        if gone:
            node_gone(ctx, s, claim, gone, results)
        elif taken := [a for a in present.get(s.eni_id, []) if a.private_ip in (None, s.private_ip)]:
            occupied(ctx, s, claim, taken, results)
        else:
            free.append((s, claim))
    return free


def gone_reason(s: Assign, instance: Instance | None) -> str:
    """Why the target cannot take the EIP now ("" when it can)."""
    if instance is None:
        return "its instance is not listed by EC2 any more"
    if instance.state not in LIVE_STATES:
        return f"its instance is {instance.state}"
    if (instance.eni_id, instance.private_ip) != (s.eni_id, s.private_ip):
        return f"its instance's primary address is now {instance.eni_id} {instance.private_ip}"
    return ""


def node_gone(ctx: PassContext, s: Assign, claim: Assignment, why: str, results: dict[Assign, Result]) -> None:
    """A fault of the node, never of the EIP: the claim closes without demoting the EIP, and the node's facts
    are read again by the next pass."""
    with ctx.fenced():
        services.assignment_close(assignment=claim, reason=f"not sent: {why}", kind=Assignment.CloseKind.TRANSIENT)
        Node.objects.filter(pk=ctx.node(s.node).pk).update(instance_checked_at=None)
    ctx.outcomes[s.node] = Node.State.WAITING
    results[s] = Result(s, "skipped", f"skipped {s.public_ip} → {s.node}: {why}")


def occupied(ctx: PassContext, s: Assign, claim: Assignment, present: list[Address],
             results: dict[Assign, Result]) -> None:
    """AssociateAddress onto a private IP that already carries an EIP silently knocks that one off
    (AllowReassociation guards only the EIP being moved): the claim closes, the node waits."""
    with ctx.fenced():
        services.assignment_close(assignment=claim, reason="the node's private IP already carries an EIP",
                                  kind=Assignment.CloseKind.TRANSIENT)
    ctx.outcomes[s.node] = Node.State.WAITING
    results[s] = Result(s, "skipped", f"skipped {s.public_ip} → {s.node}: its private IP already carries "
                                      f"{', '.join(a.public_ip for a in present)}")


def associate(ctx: PassContext, flow: _Flow, free: list[tuple[Assign, Assignment]], looked_at: float) -> None:
    """AssociateAddress concurrently, each attempt guarded right before it is sent by the lease and by the age of
    the look at its target (`looked_at`, on the monotonic clock); returns once every call has returned (the
    change to AWS is over), while the flow goes on with each node."""
    if not free:
        return
    guard = fresh_look_guard(ctx.send_guard, looked_at)

    def call(s: Assign) -> str:
        with guarded(guard):
            return ctx.ec2.associate(allocation_id=s.allocation_id, eni_id=s.eni_id, private_ip=s.private_ip,
                                     allow_reassociation=False)

    with ctx.aws_change():
        flow.send(call, free)
        flow.run(until_sent=True)
    if flow.lost is not None:
        raise flow.lost


class _Flow:
    """A slice's assignments, each node on its own as soon as its own call returns, so that none waits for the
    slowest call of its slice: its AssociateAddress (the slice's all go to the pool first, so none is held back
    behind a confirmation), one DescribeAddresses for the calls that returned meanwhile, the record (in the pass's
    thread), its marks and taint lift, their record. After a lost lease nothing more is recorded or marked: the
    associations AWS accepted stay open, unconfirmed, for the pass that holds the lease now to adopt."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self.claims: dict[Assign, Assignment] = {}
        self.results: dict[Assign, Result] = {}
        self.lost: LeaseLost | None = None
        self.grace = ctx.grace_deadline()
        self.pending: set[Future[Any]] = set()
        self.sending: set[Future[Any]] = set()  # the AssociateAddress calls not yet returned
        self.then: dict[Future[Any], Callable[[Any], None]] = {}
        self.association_ids: dict[Assign, str] = {}
        self.returned: list[Assign] = []  # associated, their confirmation not yet asked for
        self.expected: dict[str, str | None] = {}  # node name -> the instance the pass observed behind it
        self.marking: dict[str, Assign] = {}  # node name -> its step, while its marks are on their way

    def result(self, s: Assign) -> Result:
        return self.results.get(s) or Result(s, "skipped")

    def send(self, call: Callable[[Assign], str], free: list[tuple[Assign, Assignment]]) -> None:
        for s, claim in free:
            self.claims[s] = claim
            self.results[s] = Result(s, "sending")  # from here on, no longer "never sent"
        self.sending = {self.submit(call, s, self.associated) for s, _ in free}

    def run(self, *, until_sent: bool = False) -> None:
        """Settle the calls as they end: all of them, or (until_sent) until the slice's AssociateAddress calls
        returned."""
        while self.pending and not (until_sent and not self.sending):
            done, self.pending = wait(self.pending, return_when=FIRST_COMPLETED)
            self.sending -= done
            self.settle(done)

    def drain(self) -> None:
        self.run()
        if self.lost is not None:
            raise self.lost

    def settle(self, done: set[Future[Any]]) -> None:
        """The next stage of every call that ended meanwhile, their records in one commit (a savepoint each): a
        commit per record would hold the later nodes of a burst back by as much."""
        entered = False
        try:
            with self.ctx.fenced():
                entered = True
                self.settle_each(done)
        except LeaseLost as exc:
            if entered:
                raise
            self.lost = exc  # refused before anything was written: each item meets the lost lease on its own
            self.settle_each(done)
        if self.returned:  # the calls that returned meanwhile: one DescribeAddresses confirms them all
            group, self.returned = self.returned, []
            self.submit(self.look, group, self.confirmed)

    def settle_each(self, done: set[Future[Any]]) -> None:
        # In allocation id order, as every pass locks ElasticIP rows (workers/observe.py): no deadlock between passes.
        for future in sorted(done, key=lambda f: getattr(f.result().item, "allocation_id", "")):
            self.then.pop(future)(future.result())  # its next stage, if any, is submitted (self.pending)

    def submit(self, fn: Callable[[Any], Any], item: Any, then: Callable[[Any], None]) -> Future[Any]:
        future = self.ctx.submit(fn, item)
        self.then[future] = then
        self.pending.add(future)
        return future

    def unconfirmed(self, s: Assign) -> None:
        self.results[s] = Result(s, "unconfirmed", f"assigned {s.public_ip} → {s.node}, not yet confirmed by AWS")

    def associated(self, outcome: Outcome[Assign, str]) -> None:
        s = outcome.item
        if isinstance(outcome.error, LeaseLost):
            del self.results[s]  # stopped by its guard before it was sent: its claim goes, unless a newer holder has it
            self.lost = outcome.error
        elif isinstance(outcome.error, Ec2Error):
            not_associated(self.ctx, s, self.claims[s], outcome.error, self.results)
        elif self.lost is not None:
            self.unconfirmed(s)
        else:
            assert outcome.value is not None
            self.association_ids[s] = outcome.value
            self.returned.append(s)

    def look(self, group: list[Assign]) -> dict[str, Address]:
        # The associations are made: their confirmation may wait a little past the deadline.
        with budget.deadline(self.grace):
            return self.ctx.ec2.get_addresses(s.allocation_id for s in group)

    def confirmed(self, outcome: Outcome[list[Assign], dict[str, Address]]) -> None:
        for s in outcome.item:
            if outcome.error is not None:
                fail(self.ctx, self.results, s, outcome.error)  # the claim stays open: the next pass sees the EIP
            elif self.lost is not None:
                self.unconfirmed(s)
            else:
                self.record(s, (outcome.value or {}).get(s.allocation_id))

    def record(self, s: Assign, seen: Address | None) -> None:
        ctx = self.ctx
        try:
            with ctx.fenced():
                line = record_association(ctx, s, self.claims[s], self.association_ids[s], seen)
        except LeaseLost as exc:
            self.lost = exc
            self.unconfirmed(s)
            return
        except DatabaseError as exc:
            fail(ctx, self.results, s, exc)
            return
        if line:
            self.results[s] = Result(s, "unconfirmed", line)
            return
        node = ctx.node(s.node)
        self.expected[s.node], self.marking[s.node] = node.instance_id or None, s
        mark = MarkReady(s.node, s.allocation_id, s.public_ip, lift_taint=node.startup_tainted, set_marks=True)
        self.submit(lambda m: mark_on_node(ctx, m, self.expected[m.node]), mark, self.marked)

    def marked(self, outcome: Outcome[MarkReady, bool]) -> None:
        ctx = self.ctx
        s = self.marking.pop(outcome.item.node)
        try:
            with ctx.fenced():
                recorded = marked(ctx, outcome, self.expected[s.node])
        except LeaseLost as exc:
            recorded = Outcome(outcome.item, error=exc)
        if isinstance(recorded.error, LeaseLost):
            self.lost = recorded.error  # a newer holder wrote the node: this pass writes nothing more
            self.results[s] = Result(s, "unconfirmed", f"assigned {s.public_ip} → {s.node}; its marks wait for "
                                                       "the pass that holds the spec now")
        elif recorded.error is not None:
            fail(ctx, self.results, s, recorded.error)
        else:
            self.results[s] = Result(s, "assigned", f"assigned {s.public_ip} → {s.node}")


def fresh_look_guard(send_guard: Callable[[float], None] | None, looked_at: float) -> Callable[[float], None]:
    """The pass's send guard (the lease), then the look's age, last: an attempt whose look at its target is
    older than LOOK_FRESH_SECONDS stops unsent (OutOfTime), as one without a token does."""
    def guard(needed: float) -> None:
        if send_guard is not None:
            send_guard(needed)
        age = time.monotonic() - looked_at
        if age > LOOK_FRESH_SECONDS:
            raise budget.OutOfTime(f"the look at its target is {age:.1f}s old (at most {LOOK_FRESH_SECONDS:g}s)")

    return guard


def not_associated(ctx: PassContext, s: Assign, claim: Assignment, exc: Ec2Error,
                   results: dict[Assign, Result]) -> None:
    """AssociateAddress failed. An attempt that may have landed keeps the claim open; a node that is gone is the
    node's fault; only a real refusal says something about the EIP (it goes last in the free order); a throttle
    or a call never sent says nothing, and the EIP keeps its turn."""
    if exc.maybe_landed:
        ctx.outcomes[s.node] = Node.State.WAITING
        ctx.failed(what(s), exc, node=s.node, allocation_id=s.allocation_id, kind="assign",
                   failed_state=Node.State.WAITING)
        results[s] = Result(s, "unconfirmed", error=exc)
        return
    if isinstance(exc, NotFound) and exc.code in NODE_GONE_CODES:
        node_gone(ctx, s, claim, f"AWS no longer knows its {'ENI' if 'Interface' in exc.code else 'instance'}",
                  results)
        return
    transient = isinstance(exc, Throttled | Transient)
    reason = (str(exc).split(": ", 1)[-1] if isinstance(exc, OutOfTime)
              else f"AWS {'call failed' if transient else 'refused'}: {exc.code or type(exc).__name__}")
    with ctx.fenced():
        services.assignment_close(assignment=claim, reason=reason, kind=Assignment.CloseKind.TRANSIENT if transient
                                  else Assignment.CloseKind.REFUSED)
    if isinstance(exc, OutOfTime):
        ctx.leave(what(s), why=reason, node=s.node, failed_state=Node.State.WAITING)
        results[s] = Result(s, "left", error=exc)
    else:
        fail(ctx, results, s, exc)


def give_back(ctx: PassContext, items: Iterable[tuple[Assign, Assignment]], exc: Ec2Error,
              results: dict[Assign, Result]) -> None:
    """The look at the targets failed: nothing was sent, the claims close."""
    for s, claim in items:
        not_associated(ctx, s, claim, exc, results)


def give_back_unsent(ctx: PassContext, unsent: list[tuple[Assign, Assignment]]) -> None:
    """The lease was lost before these were sent: their claims close, if this pass may still write (a newer
    holder's fencing number refuses it; that holder then closes them, once no call of this pass can land)."""
    if not unsent:
        return
    try:
        with ctx.fenced():
            for _, claim in unsent:
                services.assignment_close(assignment=claim, reason="not sent: the pass lost its lease",
                                          kind=Assignment.CloseKind.TRANSIENT)
    except LeaseLost:
        pass


def record_association(ctx: PassContext, s: Assign, claim: Assignment, association_id: str,
                       confirmed: Address | None) -> str | None:
    """AWS answered AssociateAddress; `confirmed` is what DescribeAddresses shows now. Records it and returns
    None when confirmed, else the line for the report (the node keeps waiting, the claim stays open)."""
    if confirmed is None or confirmed.eni_id != s.eni_id:
        ctx.outcomes[s.node] = Node.State.WAITING
        return f"assigned {s.public_ip} → {s.node}, not yet confirmed by AWS"
    with ctx.fenced():
        if not services.assignment_confirm(assignment=claim, association_id=association_id):
            # The claim was closed meanwhile (a racing pass took it for stale): AWS has the association, and
            # the next pass adopts it from there.
            ctx.outcomes[s.node] = Node.State.WAITING
            return f"assigned {s.public_ip} → {s.node}; the record is repaired by the next pass"
        node, eip = ctx.node(s.node), ctx.eip(s.allocation_id)
        ElasticIP.objects.filter(pk=eip.pk).update(
            association_id=association_id, eni_id=s.eni_id, private_ip=s.private_ip,
            instance_id=confirmed.instance_id or node.instance_id,
        )
        services.region_addresses_written(region=eip.region)
    ctx.record(Event.Kind.ASSIGNED, f"associated with {s.eni_id} ({s.private_ip})", node=node, eip=eip)
    return None


def fail(ctx: PassContext, results: dict[Assign, Result], s: Assign, exc: Exception) -> None:
    ctx.failed(what(s), exc, node=s.node, allocation_id=s.allocation_id, kind="assign",
               failed_state=Node.State.WAITING)
    results[s] = Result(s, "failed", error=exc)
