"""Alert keys: what is wrong with a launch spec right now (LaunchSpec.active_alerts), one vocabulary.

A key is `<name>` or `<name>:<subject>` (a node name or an allocation id). The planner and the workers make
them, the dashboard names and colours them, and each is recorded as one event of its kind when it starts (an
episode), not once per pass. Pure: no Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from .vocabulary import NoteKind


class Alert(StrEnum):
    POOL_EXHAUSTED = "pool_exhausted"
    READ_FAILED = "read-failed"
    STEP_FAILED = "step-failed"
    NODE_FOREIGN_EIP = "node-foreign-eip"
    NODE_TWO_SPECS = "node-two-specs"
    EIP_TWO_SPECS = "eip-two-specs"
    EIP_SECOND_ON_NODE = "eip-second-on-node"
    EIP_FOREIGN = "eip-foreign"
    NODE_NO_IPV4 = "node-no-ipv4"
    POOL_LOW = "pool_low"
    EGRESS_NOT_VIA_EIP = "egress-not-via-eip"


# The event kind each alert is recorded as, and so the badge it shows with.
KIND: dict[Alert, NoteKind] = {
    Alert.POOL_EXHAUSTED: NoteKind.POOL_EXHAUSTED,
    Alert.READ_FAILED: NoteKind.ERROR,
    Alert.STEP_FAILED: NoteKind.ERROR,
    Alert.NODE_FOREIGN_EIP: NoteKind.CONFLICT,
    Alert.NODE_TWO_SPECS: NoteKind.CONFLICT,
    Alert.EIP_TWO_SPECS: NoteKind.CONFLICT,
    Alert.EIP_SECOND_ON_NODE: NoteKind.CONFLICT,
    Alert.EIP_FOREIGN: NoteKind.CONFLICT,
    Alert.NODE_NO_IPV4: NoteKind.ERROR,
    Alert.POOL_LOW: NoteKind.POOL_LOW,
    Alert.EGRESS_NOT_VIA_EIP: NoteKind.EGRESS_NOT_VIA_EIP,
}

# As people say them; "{}" is the key's subject.
LABEL: dict[Alert, str] = {
    Alert.POOL_EXHAUSTED: "pool exhausted",
    Alert.READ_FAILED: "reading AWS or Kubernetes fails",
    Alert.STEP_FAILED: "error: a step keeps failing ({})",
    Alert.NODE_FOREIGN_EIP: "conflict: node {} carries an EIP from outside the pool",
    Alert.NODE_TWO_SPECS: "conflict: node {} is matched by two launch specs",
    Alert.EIP_TWO_SPECS: "conflict: EIP {} is selected by two launch specs",
    Alert.EIP_SECOND_ON_NODE: "conflict: EIP {} is a second pool EIP on one node",
    Alert.EIP_FOREIGN: "conflict: EIP {} is on an instance that is not a node of this spec",
    Alert.NODE_NO_IPV4: "error: node {} has no primary private IPv4",
    Alert.POOL_LOW: "pool low: fewer free EIPs than its headroom (minFree)",
    Alert.EGRESS_NOT_VIA_EIP: "egress: node {} does not send its egress through its EIP",
}


# What the operator can do while the alert holds (the overview's "Needs attention" panel). Pool exhausted and
# read-failed have problems of their own there (pools/selectors.py spec_problem_list), with the pool's figures.
ACTION: dict[Alert, str] = {
    Alert.STEP_FAILED: "The step is retried on every pass and fails each time: its error is in the history.",
    Alert.NODE_FOREIGN_EIP: "eipdash leaves the node alone (associating would knock that EIP off): disassociate "
                            "the other EIP, or take the node out of the node group.",
    Alert.NODE_TWO_SPECS: "Change the node labels of one of the launch specs so that one spec matches the node.",
    Alert.EIP_TWO_SPECS: "Neither spec assigns it: change one spec's tag selector, or the EIP's tags.",
    Alert.EIP_SECOND_ON_NODE: "AWS shows two pool EIPs on one node: disassociate the second one; eipdash leaves "
                              "it alone.",
    Alert.EIP_FOREIGN: "eipdash never pulls it from there: disassociate it in AWS, or untag it from the pool.",
    Alert.NODE_NO_IPV4: "The node stays tainted until its primary ENI has a private IPv4: check its network setup.",
    Alert.POOL_LOW: "Tag more EIPs into the pool (or allocate them with its tag) before the next rolling upgrade, "
                    "or lower the spec's minFree.",
    Alert.EGRESS_NOT_VIA_EIP: "Its subnet's default route goes through a NAT gateway (or nowhere): partners see the "
                              "NAT's address, not the EIP. Run the node group in a subnet routed to an internet "
                              "gateway, or allowlist the NAT's address; the node's page shows the path.",
}
UNKNOWN_ACTION = "See the latest events of this launch spec in the history."


def alert_key(name: Alert, subject: str = "") -> str:
    return f"{name.value}:{subject}" if subject else name.value


def alert_name(key: str) -> Alert | None:
    """The alert a key names; None for a key this version does not know (written by another version)."""
    try:
        return Alert(str(key).partition(":")[0])
    except ValueError:
        return None


def alert_kind(key: str) -> str:
    """The event kind of an alert key (an unknown key is an error: something is wrong, whatever it is)."""
    name = alert_name(key)
    return KIND[name].value if name is not None else NoteKind.ERROR.value


def alert_label(key: str) -> str:
    name = alert_name(key)
    if name is None:
        return str(key).replace("_", " ").replace("-", " ")
    label = LABEL[name]
    return label.format(str(key).partition(":")[2]) if "{}" in label else label


def alert_action(key: str) -> str:
    """What to do while the alert holds."""
    name = alert_name(key)
    return ACTION.get(name, UNKNOWN_ACTION) if name is not None else UNKNOWN_ACTION


# How long the overview can say when a resolved alert ended (its window is the last hour).
ENDED_KEPT = timedelta(hours=1)


def alerts_ended(before: Iterable[str], after: Iterable[str], ended: Mapping[str, str], now: datetime
                 ) -> dict[str, str]:
    """Key -> ISO time it ended: the keys true before this pass and not after end now; a key true again is no
    longer ended; an end older than ENDED_KEPT is forgotten."""
    still = set(after)
    kept = {key: when for key, when in ended.items()
            if key not in still and datetime.fromisoformat(when) >= now - ENDED_KEPT}
    return kept | {key: now.isoformat() for key in set(before) - still}
