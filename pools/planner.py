"""The planner: what one reconcile pass of one launch spec should do. Pure: no I/O, no ORM, no clock.

The workers, `reconcile --dry-run` and the dashboard's plan preview all call `plan()`, so they can
never disagree. Each rule is a small function below, tested on plain values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .alerts import Alert, alert_key
from .egress import VIA_NAT, VIA_NONE
from .vocabulary import DEAD_STATES, LIVE_STATES, RESTING_STATES, CloseKind, NodeState, NoteKind

# What the executor does when its fresh DescribeAddresses shows the EIP still on the claim's ENI after
# the pass's snapshot said otherwise (a stale read): keep the claim, or disassociate it after all.
IF_THERE_KEEP = "keep"
IF_THERE_DISASSOCIATE = "disassociate"


@dataclass(frozen=True)
class SpecView:
    name: str
    tag_key: str
    tag_value: str | None
    # Alert keys that were already true after the previous pass (recorded then, not again now).
    active_alerts: frozenset[str] = frozenset()
    # A disabled spec drains: it assigns and taints nothing new, but releases and closes by the rules.
    enabled: bool = True
    # Headroom (elasticIpPool.minFree): fewer free EIPs after the pass raises pool_low.
    min_free: int = 0


@dataclass(frozen=True)
class EipView:
    """One EIP of this spec's pool, as DescribeAddresses says."""

    allocation_id: str
    public_ip: str
    association_id: str | None = None
    eni_id: str | None = None
    private_ip: str | None = None
    instance_id: str | None = None
    # From the DB: when this spec last released it. Drives "same IP for the replacement".
    last_released_at: datetime | None = None
    # From the DB: when AWS last refused to associate it (a claim closed as a refusal, not a throttle,
    # a timeout or an interrupted pass).
    last_refused_at: datetime | None = None
    # Other launch specs of the region whose selector also matches this EIP.
    also_selected_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeView:
    """What Kubernetes and EC2 say about one node of the spec (or one the DB still ties to it)."""

    name: str
    instance_id: str
    instance_state: str  # pending | running | stopping | stopped | shutting-down | terminated | gone
    eni_id: str | None
    private_ip: str | None
    startup_tainted: bool = False
    draining: bool = False
    drain_reason: str = ""  # cordoned | cluster-autoscaler | karpenter | deleting, when draining
    workload_pods: int | None = None  # None = not counted
    foreign_eip: bool = False  # a non-pool EIP already sits on the primary ENI's primary IP
    in_cluster: bool = True  # False: the Kubernetes node object is gone
    matches_spec: bool = True  # False: still tied by an open assignment, but its labels moved away
    also_matched_by: tuple[str, ...] = ()  # other launch specs whose labels match this node too
    eip_label: str = ""  # the current eipdash.io/eip label
    first_seen_at: datetime | None = None
    # Where its subnet's default route leaves (pools/egress.py: internet-gateway | nat | none; "" not known), and
    # that in words. Never a reason to hold back an EIP: only an alert for a person to look at.
    egress_via: str = ""
    egress_text: str = ""


@dataclass(frozen=True)
class Claim:
    """An open assignment in the DB."""

    node: str
    confirmed: bool = True
    # Unconfirmed and recent, seen by a pass that cannot prove it runs alone: another process may be in
    # the middle of its AWS call. Such a claim is left to that process, never taken for a crash.
    in_flight: bool = False
    # The ENI and private IP the claim was made for (the node's primary ENI at the time).
    eni_id: str | None = None
    private_ip: str | None = None


@dataclass(frozen=True)
class Assign:
    allocation_id: str
    public_ip: str
    node: str
    eni_id: str
    private_ip: str


@dataclass(frozen=True)
class Release:
    allocation_id: str
    public_ip: str
    node: str
    reason: str
    # Disassociate this association first; None when AWS already shows the EIP free (or elsewhere).
    association_id: str | None
    kind: CloseKind = CloseKind.RELEASED  # stored as the assignment's close_kind
    # Put the startup taint back on the node before the EIP goes: a live node of the spec that loses
    # its EIP must not stay schedulable (a called-off drain, an uncordon).
    retaint: bool = False
    # The snapshot showed the EIP free or elsewhere: re-read it before closing, and if it is still on the
    # claim's ENI do this (IF_THERE_KEEP or IF_THERE_DISASSOCIATE). Empty: no re-read.
    if_still_there: str = ""
    # Released from an earlier instance of the node name (EKS reuses ip-… names): the node object now is
    # its successor, whose label and annotation are not this EIP's to clear.
    replaced: bool = False
    # Released because the node drained (0 workload pods at observe time): the drain may be called off and
    # pods scheduled before the taint lands, so the executor counts the pods again once the node is
    # tainted and keeps the EIP if any are there (I2).
    drained: bool = False


@dataclass(frozen=True)
class Adopt:
    """AWS has the EIP on a node of the spec and the DB has no confirmed claim for it: record it."""

    allocation_id: str
    public_ip: str
    node: str
    association_id: str
    reason: str
    supersedes: str | None = None  # the node of a stale open assignment of this EIP, closed first
    # That node lost the EIP outside eipdash: the startup taint goes back on it (I1).
    retaint_superseded: bool = False


@dataclass(frozen=True)
class MarkReady:
    """The EIP is confirmed on the node's ENI: label and annotate the node, lift the startup taint."""

    node: str
    allocation_id: str
    public_ip: str
    lift_taint: bool
    set_marks: bool


@dataclass(frozen=True)
class Note:
    """An alert that starts with this pass: recorded once as an Event."""

    kind: NoteKind
    key: str
    reason: str
    node: str = ""
    allocation_id: str = ""
    public_ip: str = ""


@dataclass(frozen=True)
class Plan:
    assign: tuple[Assign, ...] = ()
    release: tuple[Release, ...] = ()
    adopt: tuple[Adopt, ...] = ()
    ready: tuple[MarkReady, ...] = ()
    notes: tuple[Note, ...] = ()
    # Every alert true after this pass; the executor stores it as the spec's active_alerts.
    alerts: frozenset[str] = frozenset()
    waiting: tuple[str, ...] = ()  # nodes that need an EIP and will not get one in this pass
    unmark: tuple[str, ...] = ()  # nodes whose eipdash.io/eip label names an EIP they no longer hold
    # Nodes of the spec that need an EIP, hold none and lack the startup taint: tainted first (I1).
    taint: tuple[str, ...] = ()
    # Nodes whose claim this pass closes: served on the next pass at the earliest, so that a stale read
    # can never put a second EIP on a node that still has its first.
    deferred: tuple[str, ...] = ()
    node_states: Mapping[str, NodeState] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.assign or self.release or self.adopt or self.ready or self.notes or self.unmark
                    or self.taint)

    def describe(self) -> list[str]:
        lines = [f"add the startup taint to {name}: schedulable without an EIP" for name in self.taint]
        lines += [f"release {r.public_ip or r.allocation_id} from {r.node} ({r.reason})" for r in self.release]
        lines += [f"adopt {a.public_ip} on {a.node} ({a.reason})" for a in self.adopt]
        lines += [f"assign {a.public_ip} → {a.node}" for a in self.assign]
        for m in self.ready:
            what = " and ".join(
                part for part, wanted in (("lift the startup taint", m.lift_taint), ("label", m.set_marks))
                if wanted
            )
            lines.append(f"{what} on {m.node} ({m.public_ip})")
        lines += [f"remove the stale EIP label of {name}" for name in self.unmark]
        lines += [f"{n.kind}: {n.reason}" for n in self.notes]
        lines += [f"{name} keeps waiting: no free EIP" for name in self.waiting]
        lines += [f"{name} waits for the next pass: its claim closes in this one" for name in self.deferred]
        return lines or ["nothing to do"]


# --- the rules ------------------------------------------------------------------------------------


def node_is_alive(node: NodeView) -> bool:
    return node.in_cluster and node.instance_state in LIVE_STATES


def node_is_gone(node: NodeView) -> bool:
    return not node.in_cluster or node.instance_state in DEAD_STATES


def node_is_servable(node: NodeView) -> bool:
    """An EIP can only go onto the primary private IPv4 of the primary ENI."""
    return bool(node.eni_id and node.private_ip)


def should_retaint(node: NodeView | None) -> bool:
    """A node that loses its EIP gets the startup taint back first when it may still run pods for this
    spec: in the cluster, its instance not going away, its labels still the spec's. (A disabled spec
    taints nothing: once it is deleted, nobody would lift that taint again.)"""
    return (node is not None and node.in_cluster and node.matches_spec
            and node.instance_state not in DEAD_STATES)


def unserved_reason(node: NodeView) -> str | None:
    """Why a node of the view must not get an EIP now, in words; None when it should hold one."""
    if not node.matches_spec:
        return "no longer matches the launch spec"
    if not node_is_alive(node):
        return "is not running any more"
    if node.draining:
        return "is draining"
    if node.foreign_eip:
        return "carries an EIP outside the pool"
    if node.also_matched_by:
        return (f"is matched by launch spec(s) {', '.join(node.also_matched_by)} too: a conflict that eipdash leaves "
                "alone until the labels are fixed")
    return None


def node_needs_eip(node: NodeView) -> bool:
    """Whether or not it carries the startup taint: a node set up without it gets its EIP later."""
    return unserved_reason(node) is None


def claim_outlived_its_node(claim: Claim, node: NodeView | None) -> bool:
    """The claim was made for an earlier instance of the node name: the name's node now has another
    primary ENI (an instance keeps its primary ENI for life, so another ENI is another instance).

    Wherever AWS shows that EIP, it is not on this node: if a fresh read still finds it on the claim's
    ENI, that is the dead instance's, not a stale reading to wait out; it goes back to the pool and the
    new instance is served as a new node."""
    return (node is not None and claim.eni_id is not None and node.eni_id is not None
            and node.eni_id != claim.eni_id)


def release_reason(node: NodeView) -> str | None:
    """Why a node that holds an EIP must give it back now, or None to keep it."""
    if not node.in_cluster:
        return "node deleted"
    if node.instance_state in DEAD_STATES:
        return f"instance {node.instance_state}"
    if node.draining and node.workload_pods == 0:
        return f"drained ({node.drain_reason}): no workload pods left" if node.drain_reason else (
            "drained: no workload pods left")
    return None


def released_for_drain(node: NodeView) -> bool:
    """release_reason() gives the node's EIP back because it drained, not because it is gone."""
    return node.in_cluster and node.instance_state not in DEAD_STATES and node.draining


def free_order_key(eip: EipView, released_now: bool = False) -> tuple[int, float, int]:
    """Most recently released first (a replacement node gets its predecessor's IP), then by address.

    released_now: this very pass closes its confirmed assignment, which makes it the most recent of all.
    An EIP that AWS refused since its last release goes last, least recently refused first: one EIP
    that AWS keeps refusing must not keep the oldest waiting node from the others.
    """
    address = int(ipaddress.ip_address(eip.public_ip))
    if released_now:
        return (0, float("-inf"), address)
    if eip.last_refused_at and (eip.last_released_at is None or eip.last_refused_at > eip.last_released_at):
        return (2, eip.last_refused_at.timestamp(), address)
    if eip.last_released_at:
        return (0, -eip.last_released_at.timestamp(), address)
    return (1, 0.0, address)


def waiting_order_key(node: NodeView) -> tuple[float, str]:
    """Oldest node first, so that a node does not starve behind newer ones."""
    return (node.first_seen_at.timestamp() if node.first_seen_at else float("inf"), node.name)


def _note(kind: NoteKind, key: str, reason: str, **where: str) -> Note:
    return Note(kind=kind, key=key, reason=reason, **where)


# --- the plan -------------------------------------------------------------------------------------


@dataclass
class _Draft:
    """What one pass decides, gathered rule by rule (the planner's own scratch pad, never returned)."""

    spec: SpecView
    nodes: Sequence[NodeView]
    claims: Mapping[str, Claim]
    by_eni: dict[str, NodeView] = field(default_factory=dict)
    by_name: dict[str, NodeView] = field(default_factory=dict)
    alerts: set[str] = field(default_factory=set)
    notes: list[Note] = field(default_factory=list)
    release: list[Release] = field(default_factory=list)
    adopt: list[Adopt] = field(default_factory=list)
    ready: list[MarkReady] = field(default_factory=list)
    free: list[EipView] = field(default_factory=list)
    # EIPs whose confirmed assignment this pass closes while AWS shows them free: the most recent release.
    released_now: set[str] = field(default_factory=set)
    # Which node holds which EIP after the releases and adoptions of this pass.
    held_by_node: dict[str, EipView] = field(default_factory=dict)
    # The pool EIP each node counts as its own when AWS shows more than one on it.
    own: dict[str, str] = field(default_factory=dict)

    def alert(self, note: Note) -> None:
        """An alert true after this pass; recorded as an event only when it starts."""
        self.alerts.add(note.key)
        if note.key not in self.spec.active_alerts:
            self.notes.append(note)

    def retaint(self, node: NodeView | None) -> bool:
        return self.spec.enabled and should_retaint(node)

    def close_claim(self, eip: EipView, claim: Claim, reason: str, kind: CloseKind, if_still_there: str,
                    *, replaced: bool = False, drained: bool = False) -> None:
        """Close a record whose EIP AWS does not show on the claimed node; nothing to disassociate."""
        self.release.append(Release(eip.allocation_id, eip.public_ip, claim.node, reason, association_id=None,
                                    kind=kind, retaint=self.retaint(self.by_name.get(claim.node)),
                                    if_still_there=if_still_there, replaced=replaced, drained=drained))


def plan(
    spec: SpecView,
    eips: Sequence[EipView],
    nodes: Sequence[NodeView],
    claims: Mapping[str, Claim],
) -> Plan:
    """One pass for one launch spec.

    eips: the spec's pool (EIPs its selector matches). nodes: the nodes whose labels match, plus the
    nodes the DB still ties to a pool EIP. claims: open assignments by allocation id.
    """
    draft = _Draft(spec, nodes, claims, by_eni={n.eni_id: n for n in nodes if n.eni_id},
                   by_name={n.name: n for n in nodes})
    alert_node_conflicts(draft)
    draft.own = own_eips(eips, claims, draft.by_eni)
    for eip in sorted(eips, key=lambda e: e.allocation_id):
        place_eip(draft, eip)
    close_claims_outside_pool(draft, {e.allocation_id for e in eips})
    serving = serve_waiting_nodes(draft)
    assigned_nodes = {a.node for a in serving.assign}
    if len(serving.needing) > len(draft.free):
        draft.alert(_note(NoteKind.POOL_EXHAUSTED, alert_key(Alert.POOL_EXHAUSTED),
                          f"{len(serving.needing)} {'node needs' if len(serving.needing) == 1 else 'nodes need'} an "
                          f"EIP and the pool has {len(draft.free)} free ({len(eips)} in the pool); waiting: "
                          f"{', '.join(serving.waiting)}"))
    alert_pool_low(draft, len(eips), len(draft.free) - len(serving.assign))
    alert_egress_not_via_eip(draft, serving.needing)
    return Plan(
        assign=serving.assign,
        release=tuple(draft.release),
        adopt=tuple(draft.adopt),
        ready=tuple(draft.ready),
        notes=tuple(draft.notes),
        alerts=frozenset(draft.alerts),
        waiting=serving.waiting,
        unmark=stale_labels(draft, assigned_nodes),
        taint=serving.taint,
        deferred=serving.deferred,
        node_states=node_states(nodes, draft.held_by_node.keys(), assigned_nodes, draft.release),
    )


def alert_node_conflicts(draft: _Draft) -> None:
    """Nodes eipdash must not take over: a non-pool EIP on their own address, or two specs matching them."""
    for node in draft.nodes:
        if node.foreign_eip and node.matches_spec and node_is_alive(node):
            draft.alert(_note(NoteKind.CONFLICT, alert_key(Alert.NODE_FOREIGN_EIP, node.name),
                              f"node {node.name} already carries an EIP outside the pool on its primary ENI; "
                              "left alone (associating would knock that EIP off)", node=node.name))
        if node.also_matched_by and node.matches_spec:
            draft.alert(_note(NoteKind.CONFLICT, alert_key(Alert.NODE_TWO_SPECS, node.name),
                              f"node {node.name} also matches launch spec(s) {', '.join(node.also_matched_by)}; "
                              "no EIP is assigned to it", node=node.name))


def own_eips(eips: Sequence[EipView], claims: Mapping[str, Claim], by_eni: Mapping[str, NodeView]) -> dict[str, str]:
    """AWS allows one EIP per private IP, but a record or an emulator may show two pool EIPs on one node:
    the node keeps the one its claim names (else the first), the others are a conflict, left alone."""
    own: dict[str, str] = {}
    for eip in sorted(eips, key=lambda e: (claims.get(e.allocation_id) is None, e.allocation_id)):
        holder = by_eni.get(eip.eni_id) if eip.eni_id else None
        if holder is not None and eip.private_ip in (None, holder.private_ip):
            own.setdefault(holder.name, eip.allocation_id)
    return own


def place_eip(draft: _Draft, eip: EipView) -> None:
    """Where AWS shows one pool EIP decides what becomes of it and of its record."""
    claim = draft.claims.get(eip.allocation_id)
    on_node = draft.by_eni.get(eip.eni_id) if eip.eni_id else None
    on_secondary_ip = on_node is not None and eip.private_ip not in (None, on_node.private_ip)
    if on_secondary_ip:
        # A secondary IP of the node's primary ENI (the VPC CNI gives those to pods): that is not the
        # node's own address, so it neither serves the node nor is ours to move.
        on_node = None
    # Selected by another spec of the region too: never assigned, never adopted. The release and close
    # rules below still apply, or the EIP would be held forever and the spec never deletable.
    contested = bool(eip.also_selected_by)
    if contested:
        draft.alert(_note(NoteKind.CONFLICT, alert_key(Alert.EIP_TWO_SPECS, eip.allocation_id),
                          f"{eip.public_ip} is also selected by launch spec(s) {', '.join(eip.also_selected_by)}; "
                          "neither assigns it", **_where(eip)))
    if on_node is not None and draft.own.get(on_node.name) != eip.allocation_id:
        second_eip_on_node(draft, eip, claim, on_node)
    elif eip.association_id and on_node is None and claim_left_on_a_replaced_node(draft, eip, claim):
        release_from_replaced_node(draft, eip, claim)
    elif eip.association_id and on_node is None:
        eip_on_something_else(draft, eip, claim, on_secondary_ip)
    elif claim is not None and claim.in_flight and not (on_node is not None and on_node.name == claim.node):
        # Its AssociateAddress may still land: the EIP stays the claimed node's, nobody else's, until then.
        # (Shown on the claimed node already, it landed: it is confirmed below like any other.)
        if on_node is not None or not eip.association_id:
            draft.held_by_node[claim.node] = eip
    elif on_node is not None:
        eip_on_a_node(draft, eip, claim, on_node, contested)
    else:
        eip_free(draft, eip, claim, contested)


def _where(eip: EipView) -> dict[str, str]:
    return {"allocation_id": eip.allocation_id, "public_ip": eip.public_ip}


def second_eip_on_node(draft: _Draft, eip: EipView, claim: Claim | None, on_node: NodeView) -> None:
    draft.alert(_note(NoteKind.CONFLICT, alert_key(Alert.EIP_SECOND_ON_NODE, eip.allocation_id),
                      f"{eip.public_ip} is a second pool EIP on {on_node.name}, which already holds "
                      f"{draft.own[on_node.name]}; left alone", **_where(eip)))
    if claim is not None and claim.node != on_node.name and not claim.in_flight:
        draft.close_claim(eip, claim, "moved outside eipdash", CloseKind.MOVED, IF_THERE_KEEP)


def claim_left_on_a_replaced_node(draft: _Draft, eip: EipView, claim: Claim | None) -> bool:
    """Exactly where we put it, but no node of the view has that ENI any more: the node we served is gone
    (its name now belongs to another instance, e.g. a reused EKS ip-… name)."""
    if claim is None or claim.in_flight or not claim.eni_id:
        return False
    here = eip.eni_id == claim.eni_id and eip.private_ip in (None, claim.private_ip)
    named = draft.by_name.get(claim.node)
    return here and (named is None or named.eni_id != claim.eni_id)


def release_from_replaced_node(draft: _Draft, eip: EipView, claim: Claim | None) -> None:
    """Pull it back (I4); the disassociation is idempotent if AWS already dropped it. The name's new node
    holds no EIP: it gets the startup taint first if it lacks it (I1), and is served next pass."""
    assert claim is not None
    draft.release.append(Release(eip.allocation_id, eip.public_ip, claim.node,
                                 "node gone: its name now belongs to another instance",
                                 association_id=eip.association_id,
                                 retaint=draft.retaint(draft.by_name.get(claim.node)), replaced=True))


def eip_on_something_else(draft: _Draft, eip: EipView, claim: Claim | None, on_secondary_ip: bool) -> None:
    """On an instance that is not a node of this spec, or on a pod's secondary IP: never touch it."""
    where_text = (f"a secondary IP ({eip.private_ip}) of a node's ENI" if on_secondary_ip
                  else f"{eip.instance_id or eip.eni_id}, which is not a node of this launch spec")
    draft.alert(_note(NoteKind.CONFLICT, alert_key(Alert.EIP_FOREIGN, eip.allocation_id),
                      f"{eip.public_ip} is associated with {where_text}; left alone", **_where(eip)))
    if claim is not None and not claim.in_flight:
        # Our record says ours, AWS says elsewhere: close the record, do not pull the EIP.
        draft.close_claim(eip, claim, "moved outside eipdash", CloseKind.MOVED, IF_THERE_KEEP)


def eip_on_a_node(draft: _Draft, eip: EipView, claim: Claim | None, on_node: NodeView, contested: bool) -> None:
    """On the primary address of a node of the view: released if the node is going, else held (adopted when
    the record does not say so), and the node made ready."""
    reason = release_reason(on_node)
    if reason is not None:
        # The release closes whatever record there is; nothing to adopt first.
        draft.release.append(Release(eip.allocation_id, eip.public_ip, on_node.name, reason,
                                     association_id=eip.association_id, retaint=draft.retaint(on_node),
                                     drained=released_for_drain(on_node)))
        return
    draft.held_by_node[on_node.name] = eip
    ours = claim is not None and claim.node == on_node.name and claim.confirmed
    if contested and not ours:
        return  # it stays on the node (a second EIP would knock it off), but is not recorded
    if not ours:
        draft.adopt.append(adoption(draft, eip, claim, on_node))
    if on_node.matches_spec and node_is_alive(on_node) and not on_node.draining:
        lift = on_node.startup_tainted
        marks = on_node.eip_label != eip.public_ip
        if lift or marks:
            draft.ready.append(MarkReady(on_node.name, eip.allocation_id, eip.public_ip, lift, marks))


def adoption(draft: _Draft, eip: EipView, claim: Claim | None, on_node: NodeView) -> Adopt:
    """AWS has the EIP on the node and the record does not say so (a crash, or a move outside eipdash)."""
    if claim is None:
        why = "found on the node without a record (recovery)"
    elif claim.node != on_node.name:
        why = f"moved from {claim.node} outside this pass"
    else:
        why = "association confirmed after an interrupted pass"
    superseded = claim.node if claim and claim.node != on_node.name else None
    return Adopt(eip.allocation_id, eip.public_ip, on_node.name, eip.association_id or "", why,
                 supersedes=superseded,
                 retaint_superseded=bool(superseded) and draft.retaint(draft.by_name.get(superseded or "")))


def eip_free(draft: _Draft, eip: EipView, claim: Claim | None, contested: bool) -> None:
    """AWS shows the EIP free: its record (if any) closes, and it is free for a waiting node."""
    if claim is not None:
        close_free_claim(draft, eip, claim)
    if not contested:
        draft.free.append(eip)


def close_free_claim(draft: _Draft, eip: EipView, claim: Claim) -> None:
    claimed = draft.by_name.get(claim.node)
    gone_reason = release_reason(claimed) if claimed is not None else "node gone"
    if claim_outlived_its_node(claim, claimed):
        # Made for the name's previous instance: not kept on any reading, stale or not. If a fresh read still
        # shows it on that instance's ENI, it is pulled from there.
        draft.close_claim(eip, claim, "node replaced: its name now belongs to another instance",
                          CloseKind.RELEASED if claim.confirmed else CloseKind.INTERRUPTED,
                          IF_THERE_DISASSOCIATE, replaced=True)
        if claim.confirmed:
            draft.released_now.add(eip.allocation_id)
    elif not claim.confirmed:
        # Re-read first: the association of a pass that died may just have landed.
        draft.close_claim(eip, claim, "claim without association (interrupted pass)", CloseKind.INTERRUPTED,
                          IF_THERE_KEEP)
    elif gone_reason is not None:
        # The node is going anyway: if a fresh read still shows the EIP there, pull it.
        draft.close_claim(eip, claim, gone_reason, CloseKind.RELEASED, IF_THERE_DISASSOCIATE,
                          drained=claimed is not None and released_for_drain(claimed))
        draft.released_now.add(eip.allocation_id)
    else:
        # One reading is not enough to take a busy node's EIP for lost: the executor re-reads.
        draft.close_claim(eip, claim, "association lost", CloseKind.MOVED, IF_THERE_KEEP)


def close_claims_outside_pool(draft: _Draft, pool_ids: set[str]) -> None:
    """Untagged or released from the account. Close the record; never pull an EIP that is not the pool's any
    more (if it is still on the node, the node now shows a foreign EIP). The node is in `closing`, so neither
    tainted nor served by this pass: the release itself re-taints it (I1), unless the EIP is still on it
    (foreign now: it serves the node)."""
    for allocation_id, claim in sorted(draft.claims.items()):
        if allocation_id not in pool_ids:
            left = draft.by_name.get(claim.node)
            draft.release.append(Release(allocation_id, "", claim.node, "EIP left the pool (untagged or released)",
                                         association_id=None, kind=CloseKind.MOVED,
                                         retaint=draft.retaint(left) and left is not None and not left.foreign_eip))


@dataclass(frozen=True)
class _Serving:
    assign: tuple[Assign, ...]
    needing: tuple[NodeView, ...]
    waiting: tuple[str, ...]
    taint: tuple[str, ...]
    deferred: tuple[str, ...]


def serve_waiting_nodes(draft: _Draft) -> _Serving:
    """Every node that should hold an EIP and holds none: tainted (I1), then served in order."""
    closing = closing_nodes(draft)
    candidates = one_node_per_address(draft, [n for n in draft.nodes
                                              if node_needs_eip(n) and n.name not in draft.held_by_node])
    deferred = tuple(n.name for n in candidates if n.name in closing)
    if not draft.spec.enabled:
        return _Serving((), (), (), (), deferred)  # a disabled spec taints and serves nothing new
    # Every node that should hold an EIP and holds none carries the startup taint (I1), whatever this pass
    # then manages to assign. A node whose claim this pass closes is re-tainted by that release, once the
    # executor has made sure the EIP is really gone (a stale read must not taint a busy node).
    taint = tuple(n.name for n in candidates if not n.startup_tainted and n.name not in closing)
    alert_unservable(draft, candidates)
    needing = tuple(sorted((n for n in candidates if n.name not in closing and node_is_servable(n)),
                           key=waiting_order_key))
    assign = assign_free_eips(draft, needing)
    assigned = {a.node for a in assign}
    return _Serving(assign, needing, tuple(n.name for n in needing if n.name not in assigned), taint, deferred)


def alert_pool_low(draft: _Draft, pool: int, free: int) -> None:
    """Fewer free EIPs after this pass than the spec's headroom: a rolling upgrade that adds a node before it
    drains one would find none. A disabled spec hands out nothing more, so it has no headroom to keep."""
    headroom = draft.spec.min_free
    if draft.spec.enabled and free < headroom:
        draft.alert(_note(NoteKind.POOL_LOW, alert_key(Alert.POOL_LOW),
                          f"{max(free, 0)} free of {pool} in the pool, below its headroom minFree {headroom}"))


def alert_egress_not_via_eip(draft: _Draft, needing: Sequence[NodeView]) -> None:
    """A node of the spec that holds (or is due) an EIP whose egress leaves elsewhere (a NAT gateway, or no
    internet route): the partner's allowlist of the pool's addresses will not see its traffic. Only an alert:
    the EIP still carries inbound traffic, so it is never held back for this."""
    if not draft.spec.enabled:
        return
    due = {n.name for n in needing}
    for n in draft.nodes:
        if (n.egress_via in (VIA_NAT, VIA_NONE) and n.matches_spec and n.in_cluster
                and (n.name in draft.held_by_node or n.name in due)):
            draft.alert(_note(NoteKind.EGRESS_NOT_VIA_EIP, alert_key(Alert.EGRESS_NOT_VIA_EIP, n.name),
                              f"{n.name}: {n.egress_text or n.egress_via}", node=n.name))


def one_node_per_address(draft: _Draft, candidates: list[NodeView]) -> list[NodeView]:
    """Two Node objects of one instance (a kubelet that registered again under a new name, the old object left
    listed) share one primary address, which takes one EIP: a candidate whose address already holds an EIP, or
    whose address an earlier candidate has (the most recently seen first), is not one."""
    held: set[tuple[str | None, str | None]] = {
        (n.eni_id, n.private_ip) for n in draft.nodes if n.name in draft.held_by_node and n.eni_id}
    kept: list[NodeView] = []
    for n in sorted(candidates, key=lambda n: (-(n.first_seen_at.timestamp() if n.first_seen_at else 0), n.name)):
        address = (n.eni_id, n.private_ip)
        if n.eni_id and address in held:
            continue
        held.add(address)
        kept.append(n)
    return sorted(kept, key=lambda n: n.name)


def closing_nodes(draft: _Draft) -> set[str]:
    """A node whose claim this pass closes gets nothing before the next pass: if the reading that closed it
    was stale, a second EIP would knock the first off the node in AWS."""
    return ({r.node for r in draft.release} | {a.supersedes for a in draft.adopt if a.supersedes}
            | {draft.claims[r.allocation_id].node for r in draft.release if r.allocation_id in draft.claims})


def alert_unservable(draft: _Draft, candidates: Sequence[NodeView]) -> None:
    """A node without a primary private IPv4 cannot take an EIP, so it must not take a free EIP's turn
    either. It is its own condition, not a pool shortage."""
    for n in candidates:
        if not node_is_servable(n):
            draft.alert(_note(NoteKind.ERROR, alert_key(Alert.NODE_NO_IPV4, n.name),
                              f"node {n.name} has no primary private IPv4 on a primary ENI (yet); it stays tainted",
                              node=n.name))


def assign_free_eips(draft: _Draft, needing: Sequence[NodeView]) -> tuple[Assign, ...]:
    """The free EIPs in their order (the sticky rule) to the waiting nodes in theirs (oldest first)."""
    draft.free.sort(key=lambda e: free_order_key(e, e.allocation_id in draft.released_now))
    return tuple(Assign(eip.allocation_id, eip.public_ip, node.name, node.eni_id or "", node.private_ip or "")
                 for eip, node in zip(draft.free, needing, strict=False))


def stale_labels(draft: _Draft, assigned_nodes: set[str]) -> tuple[str, ...]:
    """A label that says an EIP the node no longer holds (a crash between release and unlabel) is wrong."""
    released = {r.node for r in draft.release}
    return tuple(n.name for n in draft.nodes
                 if n.eip_label and n.in_cluster and n.name not in draft.held_by_node
                 and n.name not in assigned_nodes and n.name not in released)


def node_states(
    nodes: Iterable[NodeView], holding: Iterable[str], assigned: Iterable[str], releases: Iterable[Release]
) -> dict[str, NodeState]:
    """The state each node shows on the dashboard after this pass."""
    holding = set(holding) | set(assigned)
    released = {r.node for r in releases}
    states: dict[str, NodeState] = {}
    for node in nodes:
        if node_is_gone(node):
            state = NodeState.GONE
        elif node.name in released:
            state = NodeState.RELEASED
        elif node.instance_state in RESTING_STATES:
            state = NodeState.STOPPED
        elif node.draining:
            # A draining node that gave its EIP back stays "released" until it is gone.
            state = NodeState.DRAINING if node.name in holding else NodeState.RELEASED
        elif node.foreign_eip or node.also_matched_by:
            state = NodeState.CONFLICT
        elif node.name in holding:
            state = NodeState.READY
        else:
            state = NodeState.WAITING
        states[node.name] = state
    return states
