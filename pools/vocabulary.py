"""The words eipdash stores, shows and decides with, each spelled once. Pure: no Django, no I/O.

pools/models.py builds its choices from these enums, so that the planner and the record cannot drift
apart; the values are stored in the database and shown in exports.
"""

from __future__ import annotations

from enum import StrEnum

# --- instance states, as DescribeInstances says them ("gone": DescribeInstances has no trace) ------------

# The node can run pods, so it should hold an EIP.
LIVE_STATES = frozenset({"pending", "running"})
# A stopped instance keeps its EIP, as in AWS: it may start again.
RESTING_STATES = frozenset({"stopping", "stopped"})
# The instance is going or gone: its EIP goes back to the pool.
DEAD_STATES = frozenset({"shutting-down", "terminated", "gone"})
# EC2 does not (yet) list the instance of a node Kubernetes lists (eventual consistency after a launch).
UNKNOWN_STATE = "unknown"
GONE_STATE = "gone"


class NodeState(StrEnum):
    """The state a node shows on the dashboard (Node.state)."""

    WAITING = "waiting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    RELEASED = "released"
    GONE = "gone"
    CONFLICT = "conflict"


class NoteKind(StrEnum):
    """The kinds of alert a pass records once per episode (a subset of the event kinds)."""

    POOL_EXHAUSTED = "pool_exhausted"
    CONFLICT = "conflict"
    ERROR = "error"
    # Fewer free EIPs than the spec's minFree (its headroom): not yet a node waiting.
    POOL_LOW = "pool_low"
    # A node whose egress leaves through a NAT gateway (or has no internet route): its EIP only carries inbound.
    EGRESS_NOT_VIA_EIP = "egress_not_via_eip"


class EventKind(StrEnum):
    """The kinds of history event (Event.kind, the `event` column of the exports)."""

    ASSIGNED = "assigned"
    RELEASED = "released"
    REASSIGNED = "reassigned"
    ADOPTED = "adopted"
    TAINT_LIFTED = "taint_lifted"
    POOL_EXHAUSTED = NoteKind.POOL_EXHAUSTED.value
    CONFLICT = NoteKind.CONFLICT.value
    ERROR = NoteKind.ERROR.value
    POOL_LOW = NoteKind.POOL_LOW.value
    EGRESS_NOT_VIA_EIP = NoteKind.EGRESS_NOT_VIA_EIP.value
    # The allowlist changes in EC2: an EIP tagged into a pool (or allocated with its tag), or untagged out of
    # it (or released from the account). A change of the spec's selector is a spec_updated event instead.
    POOL_JOINED = "pool_joined"
    POOL_LEFT = "pool_left"
    # Changes of the configuration (pools/audit.py), each with the actor who made it.
    SPEC_CREATED = "spec_created"
    SPEC_UPDATED = "spec_updated"
    SPEC_DISABLED = "spec_disabled"
    SPEC_ENABLED = "spec_enabled"
    SPEC_DELETED = "spec_deleted"
    CLUSTER_ADDED = "cluster_added"
    CLUSTER_CHANGED = "cluster_changed"
    CLUSTER_DELETED = "cluster_deleted"
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    ROLE_CHANGED = "role_changed"


CONFIG_KINDS = frozenset({
    EventKind.SPEC_CREATED, EventKind.SPEC_UPDATED, EventKind.SPEC_DISABLED, EventKind.SPEC_ENABLED,
    EventKind.SPEC_DELETED, EventKind.CLUSTER_ADDED, EventKind.CLUSTER_CHANGED, EventKind.CLUSTER_DELETED,
    EventKind.TOKEN_CREATED, EventKind.TOKEN_REVOKED, EventKind.ROLE_CHANGED,
})


class CloseKind(StrEnum):
    """Why an assignment was closed (Assignment.close_kind). Only REFUSED demotes the EIP in the free order:
    a throttle or a crash says nothing about the EIP."""

    RELEASED = "released"
    REFUSED = "refused"
    TRANSIENT = "transient"
    INTERRUPTED = "interrupted"
    MOVED = "moved"
