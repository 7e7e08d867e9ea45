"""Alert keys: what is wrong with a launch spec right now (LaunchSpec.active_alerts), one vocabulary.

A key is `<name>` or `<name>:<subject>` (a node name or an allocation id). The planner and the workers make
them, the dashboard names and colours them, and each is recorded as one event of its kind when it starts (an
episode), not once per pass. Pure: no Django.
"""

from __future__ import annotations

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
}


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
