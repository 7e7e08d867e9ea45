"""Why a node is where it is, in words: the answer at the top of the node page ("why is this node still
tainted?") and the API's `waitingReason`, its timeline, and where its Kubernetes Events can be read.

Pure: no Django, no I/O, no clock (`now` is given). The selectors gather the facts (pools/selectors.py,
`node_facts`); the rules stay the planner's: a node is judged by its predicates (`node_is_gone`,
`node_is_servable`, ...) and by the plan its spec's latest pass stored, the one the spec page shows, read for one
node (`next_pass_of_lines`), so that the page never explains a wait the workers would not have.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from .alerts import Alert, alert_name
from .planner import NodeView, Plan, node_is_alive, node_is_gone, node_is_servable
from .vocabulary import RESTING_STATES, EventKind

# --- the facts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFacts:
    """The node's launch spec and its pool, as the tiles count it."""

    spec: str
    enabled: bool
    size: int
    free: int
    selector: str = ""
    # Alert keys true after the spec's last pass (LaunchSpec.active_alerts).
    alerts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Holding:
    """The node's open assignment: its claim, confirmed by AWS or not yet."""

    public_ip: str
    allocation_id: str
    since: datetime
    confirmed: bool


@dataclass(frozen=True)
class LastRelease:
    """The node's last closed assignment (since it was first seen)."""

    at: datetime
    public_ip: str
    reason: str


@dataclass(frozen=True)
class NextPass:
    """What the plan of the next pass does with one node."""

    assign: str = ""  # the public IP it gets
    waits: bool = False  # it needs an EIP and none is left for it
    deferred: bool = False  # its claim closes in that pass: served on the one after
    lift: bool = False  # its EIP is confirmed: the startup taint is lifted
    lines: tuple[str, ...] = ()  # the preview's own lines that name it


@dataclass(frozen=True)
class NodeFacts:
    view: NodeView  # as the planner sees it under its spec (matches_spec False without one)
    cluster: str
    state: str  # Node.state, as the last pass left it
    first_seen_at: datetime
    deleted_at: datetime | None = None
    eip_ready_at: datetime | None = None
    pool: PoolFacts | None = None  # None: no launch spec claims the node
    holding: Holding | None = None
    next_pass: NextPass | None = None  # None: no plan (no spec, no pass has planned it, or it cannot be read)
    waiting_since: datetime | None = None  # first seen, or its last release when later
    last_release: LastRelease | None = None


class Reason(StrEnum):
    """The first word of the answer."""

    READY = "ready"
    ASSIGNING = "assigning"
    WAITING = "waiting"
    BLOCKED = "blocked"
    NO_INSTANCE = "waiting for EC2"
    NOT_SERVABLE = "not servable"
    CONFLICT = "conflict"
    DISABLED = "disabled spec"
    NOT_MATCHED = "not matched"
    DRAINING = "draining"
    STOPPED = "stopped"
    RELEASED = "released"
    GONE = "gone"


# The colour of the answer: ok, warn, bad (needs a person), muted (its life with eipdash is over).
TONES = {
    Reason.READY: "ok", Reason.ASSIGNING: "warn", Reason.WAITING: "warn", Reason.BLOCKED: "bad",
    Reason.NO_INSTANCE: "warn", Reason.NOT_SERVABLE: "bad", Reason.CONFLICT: "bad", Reason.DISABLED: "warn",
    Reason.NOT_MATCHED: "warn", Reason.DRAINING: "warn", Reason.STOPPED: "muted", Reason.RELEASED: "muted",
    Reason.GONE: "muted",
}


@dataclass(frozen=True)
class NodeReason:
    reason: Reason
    detail: str
    # The node holds no EIP it should hold, or keeps a startup taint nothing will lift: the API's
    # waitingReason is `text` then, "" otherwise.
    waiting: bool
    hint: str = ""  # what a person can do about it, when anything
    qualifier: str = ""  # said with the first word: "draining (cordoned)"

    @property
    def word(self) -> str:
        return f"{self.reason.value} ({self.qualifier})" if self.qualifier else self.reason.value

    @property
    def text(self) -> str:
        return f"{self.word}: {self.detail}"

    @property
    def code(self) -> str:
        return self.reason.name.lower()

    @property
    def tone(self) -> str:
        return TONES[self.reason]


# --- words ----------------------------------------------------------------------------------------


def span(seconds: float) -> str:
    """4.0 s, 45 s, 3 min, 2 h 05 min, 3 d 4 h: how long, as a sentence says it."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def clock(moment: datetime, now: datetime) -> str:
    """The time of day in UTC (the dashboard's time), with the date when it is not today's."""
    moment, today = moment.astimezone(UTC), now.astimezone(UTC)
    return moment.strftime("%H:%M:%S" if moment.date() == today.date() else "%Y-%m-%d %H:%M:%S")


def _since(moment: datetime | None, now: datetime, word: str = "since") -> str:
    return f" ({word} {clock(moment, now)}, {span((now - moment).total_seconds())})" if moment else ""


# --- the answer: one named rule after the other, the first that speaks decides ----------------------


Rule = Callable[[NodeFacts, datetime], NodeReason | None]


def node_reason(facts: NodeFacts, now: datetime) -> NodeReason:
    """Why the node is where it is: the first rule that has something to say."""
    for rule in RULES:
        found = rule(facts, now)
        if found is not None:
            return found
    return _waits(facts, now)


def _gone(facts: NodeFacts, now: datetime) -> NodeReason | None:
    view = facts.view
    if not (node_is_gone(view) or facts.state == "gone"):
        return None
    if facts.deleted_at is not None:
        ago = span((now - facts.deleted_at).total_seconds())
        detail = f"deleted from the cluster at {clock(facts.deleted_at, now)} ({ago} ago)"
    else:
        detail = f"its instance is {view.instance_state}"
    if facts.holding is not None:
        detail += f"; the next pass releases {facts.holding.public_ip}"
    elif facts.eip_ready_at is None and facts.last_release is None:
        detail += ", without ever getting an EIP"
    return NodeReason(Reason.GONE, detail, waiting=False)


def _not_ours(facts: NodeFacts, now: datetime) -> NodeReason | None:
    """No spec claims it, or its labels left its spec's: eipdash serves it no more (a held EIP stays)."""
    view, pool = facts.view, facts.pool
    if pool is not None and view.matches_spec:
        return None
    if pool is None:
        detail = "no launch spec matches its labels: eipdash does not serve it"
    else:
        detail = f"its labels no longer match launch spec {pool.spec}"
    if facts.holding is not None:
        return NodeReason(Reason.NOT_MATCHED, f"{detail}; it keeps {facts.holding.public_ip} until it drains or "
                                              "is gone", waiting=False)
    if view.startup_tainted:
        return NodeReason(Reason.NOT_MATCHED, f"{detail}, and it carries the startup taint, which nothing lifts",
                          waiting=True, hint="Label the node for a launch spec, or remove the startup taint by hand.")
    return NodeReason(Reason.NOT_MATCHED, detail, waiting=False)


def _draining(facts: NodeFacts, now: datetime) -> NodeReason | None:
    view, held = facts.view, facts.holding
    if not view.draining:
        return None
    if held is not None:
        if view.workload_pods is None:
            detail = f"its workload pods are not counted yet; its EIP {held.public_ip} stays until they are gone"
        elif view.workload_pods == 0:
            detail = f"no workload pods left; the next pass releases {held.public_ip}"
        else:
            pods = f"{view.workload_pods} workload pod{'s' if view.workload_pods != 1 else ''}"
            detail = f"{pods}; its EIP {held.public_ip} stays until they are gone"
        return NodeReason(Reason.DRAINING, detail, waiting=False, qualifier=view.drain_reason)
    release = facts.last_release
    if release is not None:
        drains = f"the node drains ({view.drain_reason})" if view.drain_reason else "the node drains"
        return NodeReason(Reason.RELEASED, f"gave {release.public_ip} back at {clock(release.at, now)} "
                                           f"({release.reason}); {drains}", waiting=False)
    return NodeReason(Reason.DRAINING, "before it got an EIP: it gets none", waiting=False,
                      qualifier=view.drain_reason)


def _holding(facts: NodeFacts, now: datetime) -> NodeReason | None:
    held, view = facts.holding, facts.view
    if held is None:
        return None
    if not held.confirmed:
        return NodeReason(Reason.ASSIGNING, f"{held.public_ip} claimed at {clock(held.since, now)}, waiting for AWS "
                                            "to confirm it", waiting=True)
    if view.instance_state in RESTING_STATES:
        return NodeReason(Reason.STOPPED, f"its instance is {view.instance_state}; it keeps {held.public_ip}, as "
                                          "in AWS", waiting=False)
    detail = f"holds {held.public_ip} since {clock(held.since, now)}"
    if facts.eip_ready_at is not None:
        detail += f" (waited {span((facts.eip_ready_at - facts.first_seen_at).total_seconds())})"
    if view.startup_tainted:
        lifts = facts.next_pass is not None and facts.next_pass.lift
        detail += "; the next pass lifts its startup taint" if lifts else "; it still carries the startup taint"
    if facts.pool is not None and not facts.pool.enabled:
        detail += f"; {facts.pool.spec} is disabled: it keeps it until it drains"
    return NodeReason(Reason.READY, detail, waiting=False)


def _stopped(facts: NodeFacts, now: datetime) -> NodeReason | None:
    if facts.view.instance_state not in RESTING_STATES:
        return None
    return NodeReason(Reason.STOPPED, f"its instance is {facts.view.instance_state}: it gets an EIP when it runs "
                                      "again", waiting=False)


def _disabled(facts: NodeFacts, now: datetime) -> NodeReason | None:
    pool = facts.pool
    if pool is None or pool.enabled:
        return None
    tainted = ", and its startup taint stays" if facts.view.startup_tainted else ""
    return NodeReason(Reason.DISABLED, f"{pool.spec} is disabled: it assigns no EIP{tainted}",
                      waiting=facts.view.startup_tainted,
                      hint="Enable the launch spec again, or remove the node.")


def _no_instance(facts: NodeFacts, now: datetime) -> NodeReason | None:
    if node_is_alive(facts.view):
        return None
    return NodeReason(Reason.NO_INSTANCE, f"DescribeInstances does not list its instance "
                                          f"{facts.view.instance_id or '(none yet)'} yet", waiting=True)


def _conflict(facts: NodeFacts, now: datetime) -> NodeReason | None:
    view = facts.view
    if view.foreign_eip:
        return NodeReason(Reason.CONFLICT, "a non-pool EIP sits on its primary IP; eipdash leaves the node alone "
                                           "(associating would knock that EIP off)", waiting=True,
                          hint="Disassociate that EIP in AWS if this node should take one from the pool.")
    if view.also_matched_by:
        specs = ", ".join(view.also_matched_by)
        word = "launch specs" if len(view.also_matched_by) > 1 else "launch spec"
        return NodeReason(Reason.CONFLICT, f"{word} {specs} {'match' if len(view.also_matched_by) > 1 else 'matches'}"
                                           " it too; no EIP is assigned until the labels are fixed", waiting=True,
                          hint="Change the node's labels or the launch specs' so that one spec matches it.")
    return None


def _not_servable(facts: NodeFacts, now: datetime) -> NodeReason | None:
    if node_is_servable(facts.view):
        return None
    return NodeReason(Reason.NOT_SERVABLE, "no primary private IPv4 on its primary ENI (yet); it takes no free "
                                           "EIP's turn", waiting=True,
                      hint="An EIP goes onto the primary private IPv4 of network card 0, device 0: check the "
                           "instance's network interface (an IPv6-only subnet has none).")


def _blocked(facts: NodeFacts, now: datetime) -> NodeReason | None:
    pool = facts.pool
    if pool is None or not any(alert_name(key) == Alert.READ_FAILED for key in pool.alerts):
        return None
    return NodeReason(Reason.BLOCKED, f"reading AWS or Kubernetes fails for {pool.spec}; nothing is assigned until "
                                      f"it reads again{_since(facts.waiting_since, now, 'waiting since')}",
                      waiting=True, hint="See the latest error in the history (credentials, IAM permissions, "
                                         "kube context, throttling).")


def _next_pass(facts: NodeFacts, now: datetime) -> NodeReason | None:
    step = facts.next_pass
    if step is None:
        return None
    if step.assign:
        return NodeReason(Reason.ASSIGNING, f"the next pass gives it {step.assign}"
                                            f"{_since(facts.waiting_since, now, 'waiting since')}", waiting=True)
    if step.deferred:
        return NodeReason(Reason.WAITING, "its last claim closes in the next pass; it is served on the one after"
                                          f"{_since(facts.waiting_since, now)}", waiting=True)
    return None


def _waits(facts: NodeFacts, now: datetime) -> NodeReason:
    """Nothing else holds it back: the pool has no free EIP left for it (or the next pass decides)."""
    pool, step = facts.pool, facts.next_pass
    assert pool is not None  # _not_ours spoke otherwise
    since = _since(facts.waiting_since, now)
    hint = (f"Tag more Elastic IPs {pool.selector} in the spec's region, or wait for a node to give one back."
            if pool.selector else "")
    if pool.free == 0:
        return NodeReason(Reason.WAITING, f"the pool of {pool.spec} has 0 free of {pool.size}{since}", waiting=True,
                          hint=hint)
    if step is not None and step.waits:
        return NodeReason(Reason.WAITING, f"the pool of {pool.spec} has {pool.free} free of {pool.size}, all going "
                                          f"to nodes that waited longer{since}", waiting=True, hint=hint)
    return NodeReason(Reason.WAITING, f"the pool of {pool.spec} has {pool.free} free of {pool.size}; the next pass "
                                      f"decides{since}", waiting=True)


RULES: tuple[Rule, ...] = (_gone, _not_ours, _draining, _holding, _stopped, _disabled, _no_instance, _conflict,
                           _not_servable, _blocked, _next_pass)


def history_only_reason(last_event_at: datetime, now: datetime) -> NodeReason:
    """A node whose row retention has pruned: only its history names it."""
    return NodeReason(Reason.GONE, "the record keeps only its history (its node row was pruned after it left); "
                                   f"its last event was at {clock(last_event_at, now)}", waiting=False)


# --- the plan of the next pass, read for one node ---------------------------------------------------


def names(text: str, name: str) -> bool:
    """The text names the node: its name, not a longer name that contains it (ip-10-0-1-2 in ip-10-0-1-23)."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", text) is not None


def next_pass_of(plan: Plan, name: str) -> NextPass:
    """The planner's decisions about one node, and the preview's lines (Plan.describe) that name it."""
    return NextPass(
        assign=next((a.public_ip for a in plan.assign if a.node == name), ""),
        waits=name in plan.waiting,
        deferred=name in plan.deferred,
        lift=any(m.node == name and m.lift_taint for m in plan.ready),
        lines=tuple(line for line in plan.describe() if names(line, name)),
    )


# The lines of Plan.describe() that carry a decision about one node (see next_pass_of_lines).
_ASSIGN_LINE = re.compile(r"assign (\S+) → (\S+)")
_LIFT_LINE = re.compile(r"lift the startup taint(?: and label)? on (\S+) \(.*\)")
_WAITS_LINE = " keeps waiting: no free EIP"
_DEFERRED_LINE = " waits for the next pass: its claim closes in this one"


def next_pass_of_lines(lines: Sequence[str], name: str) -> NextPass:
    """next_pass_of, read from a plan's lines (Plan.describe) as a pass stored them (SpecPlan.lines), so that no
    request has to plan: the same decisions about the node, and the lines that name it."""
    assign, waits, deferred, lift = "", False, False, False
    named = []
    for line in lines:
        if not names(line, name):
            continue
        named.append(line)
        assigned, lifted = _ASSIGN_LINE.fullmatch(line), _LIFT_LINE.fullmatch(line)
        if assigned is not None and assigned.group(2) == name:
            assign = assign or assigned.group(1)
        elif lifted is not None and lifted.group(1) == name:
            lift = True
        waits = waits or line == f"{name}{_WAITS_LINE}"
        deferred = deferred or line == f"{name}{_DEFERRED_LINE}"
    return NextPass(assign=assign, waits=waits, deferred=deferred, lift=lift, lines=tuple(named))


def waiting_names(reason: str) -> list[str]:
    """The nodes a pool_exhausted event lists as waiting: the planner ends its reason with `waiting: a, b`."""
    _before, found, listed = reason.rpartition("waiting: ")
    return [part.strip() for part in listed.split(",") if part.strip()] if found else []


# --- the timeline -------------------------------------------------------------------------------------


class EventLike(Protocol):
    """One history event (a pools.models.Event row)."""

    @property
    def timestamp(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def public_ip(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def actor(self) -> str: ...


@dataclass(frozen=True)
class Moment:
    at: datetime | None  # None: now, as the last pass saw it
    what: str
    detail: str
    badge: str  # the badge's CSS class
    actor: str = ""


HOLD_KINDS = (EventKind.ASSIGNED, EventKind.ADOPTED, EventKind.REASSIGNED)
EVENT_WORDS: dict[str, str] = {
    EventKind.ASSIGNED: "assigned", EventKind.ADOPTED: "adopted", EventKind.REASSIGNED: "reassigned",
    EventKind.TAINT_LIFTED: "taint lifted", EventKind.RELEASED: "released",
    EventKind.POOL_EXHAUSTED: "pool exhausted", EventKind.CONFLICT: "conflict", EventKind.ERROR: "error",
    EventKind.EGRESS_NOT_VIA_EIP: "egress not via its EIP",
}


@dataclass
class _Story:
    """The timeline as it is told, event after event: when the current wait started."""

    moments: list[Moment] = field(default_factory=list)
    wait_start: datetime | None = None

    def tell(self, event: EventLike) -> None:
        kind, ip = str(event.kind), event.public_ip
        actor = event.actor if event.actor != "system" else ""
        what, badge = EVENT_WORDS.get(kind, kind.replace("_", " ")), f"kind-{kind}"
        if kind in HOLD_KINDS:
            detail = ip + (f" after waiting {span((event.timestamp - self.wait_start).total_seconds())}"
                           if self.wait_start is not None else "")
            self.wait_start = None
        elif kind == EventKind.RELEASED:
            detail = f"{ip}: {event.reason}" if ip else event.reason
            self.wait_start = event.timestamp
        else:
            detail = event.reason
        self.moments.append(Moment(event.timestamp, what, detail, badge, actor))


def node_timeline(facts: NodeFacts | None, events: Sequence[EventLike], now: datetime) -> list[Moment]:
    """From first seen: registered, its history events (oldest first), the EIP the row says it got when its
    event is gone, waiting since, draining, gone. `events` oldest first; facts None: only the history is left."""
    story = _Story()
    if facts is not None:
        story.moments.append(Moment(facts.first_seen_at, "registered",
                                    f"first seen by eipdash in cluster {facts.cluster}, instance "
                                    f"{facts.view.instance_id or '?'}", "badge-muted"))
        story.wait_start = facts.first_seen_at
    for event in events:
        story.tell(event)
    if facts is not None:
        story.moments.extend(_now_moments(facts, events, now))
    order = {id(moment): index for index, moment in enumerate(story.moments)}
    # In time order; "now" last; at one instant, in the order they were told.
    return sorted(story.moments, key=lambda m: (m.at is None, m.at or now, order[id(m)]))


def _now_moments(facts: NodeFacts, events: Sequence[EventLike], now: datetime) -> list[Moment]:
    """What the node row says and no event of the list does."""
    moments = []
    view = facts.view
    if facts.eip_ready_at is not None and not any(str(e.kind) in HOLD_KINDS for e in events):
        moments.append(Moment(facts.eip_ready_at, "EIP confirmed", "from the node record (its history event is not "
                                                                   "in the record any more)", "kind-assigned"))
    reason = node_reason(facts, now)
    if reason.reason in (Reason.WAITING, Reason.ASSIGNING) and facts.holding is None and facts.waiting_since:
        moments.append(Moment(facts.waiting_since, "waiting",
                              f"for an EIP, {span((now - facts.waiting_since).total_seconds())} so far",
                              "state-waiting"))
    if view.draining and facts.deleted_at is None:
        pods = ("its workload pods not counted" if view.workload_pods is None
                else f"{view.workload_pods} workload pod{'s' if view.workload_pods != 1 else ''}")
        moments.append(Moment(None, "draining", f"{view.drain_reason or 'drains'}: {pods}, as the last pass saw it",
                              "state-draining"))
    if facts.deleted_at is not None:
        moments.append(Moment(facts.deleted_at, "gone", "deleted from the cluster", "state-gone"))
    return moments


# --- taints and Kubernetes Events -------------------------------------------------------------------

# What the node row records of its taints (Node.startup_tainted, Node.drain_reason) and what each means; the
# taint keys are the ones workers/kube.py reads (KubeNode.drain_reason).
DRAIN_TAINTS = {
    "cordoned": ("node.kubernetes.io/unschedulable:NoSchedule",
                 "cordoned (kubectl cordon or drain): the node drains; its EIP stays until its workload pods are gone"),
    "cluster-autoscaler": ("ToBeDeletedByClusterAutoscaler:NoSchedule",
                           "the cluster autoscaler removes the node: it drains, and its EIP stays until its workload "
                           "pods are gone"),
    "karpenter": ("karpenter.sh/disrupted:NoSchedule",
                  "Karpenter disrupts the node (or karpenter.sh/disruption): it drains, and its EIP stays until its "
                  "workload pods are gone"),
    "deleting": ("(deletion timestamp)",
                 "the node object is being deleted: its EIP stays until its workload pods are gone"),
}


def taint_notes(facts: NodeFacts, startup_taint: str) -> list[tuple[str, str]]:
    """The taints the last pass saw that eipdash acts on, each with its meaning."""
    notes = []
    if facts.view.startup_tainted:
        notes.append((f"{startup_taint}:NoSchedule",
                      "the startup taint: no pod lands before its EIP is attached; eipdash lifts it once AWS "
                      "confirms the node's EIP, and puts it back before the EIP leaves a live node"))
    if facts.view.draining:
        notes.append(DRAIN_TAINTS.get(facts.view.drain_reason, ("(drain)", "the node drains")))
    return notes


# The reasons of the Kubernetes Events the workers write on a node (workers/kube_events.py), with their meaning.
KUBE_EVENT_REASONS: tuple[tuple[str, str], ...] = (
    ("EIPPending", "the startup taint was put (back) on the node"),
    ("EIPAssigned", "an EIP was associated and confirmed"),
    ("EIPReassigned", "an operator moved an EIP to the node"),
    ("EIPReleased", "its EIP went back to the pool"),
    ("EIPPoolExhausted", "the node waits: its pool had no free EIP"),
    ("EIPConflict", "eipdash leaves the node or an EIP alone"),
    ("EIPError", "an AWS or Kubernetes call failed"),
    ("EIPEgressNotViaEIP", "its subnet sends egress through a NAT gateway (or nowhere), not through its EIP"),
)


def kubectl_events_command(name: str, *, context: str = "", kubeconfig: str = "") -> str:
    """The command that lists the node's Kubernetes Events (they live in the default namespace), against the
    cluster's own kubeconfig file and context when it has them: without, it uses the reader's current context.
    Each value is one shell word in the `--flag=value` form, so that a value starting with "-" stays a value."""
    args = [f"--kubeconfig={shlex.quote(kubeconfig)}" if kubeconfig else "",
            f"--context={shlex.quote(context)}" if context else ""]
    selector = shlex.quote(f"involvedObject.kind=Node,involvedObject.name={name}")
    flags = " ".join(arg for arg in args if arg)
    return f"kubectl {flags + ' ' if flags else ''}get events -n default --field-selector={selector}"
