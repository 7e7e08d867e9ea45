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


class CloseKind(StrEnum):
    """Why an assignment was closed (Assignment.close_kind). Only REFUSED demotes the EIP in the free order:
    a throttle or a crash says nothing about the EIP."""

    RELEASED = "released"
    REFUSED = "refused"
    TRANSIENT = "transient"
    INTERRUPTED = "interrupted"
    MOVED = "moved"
