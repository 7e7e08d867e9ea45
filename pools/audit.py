"""The audit of the configuration: who changed it, and what changed, in words. Pure: no ORM, no I/O.

Every change of a launch spec, a cluster, an API token or a user's role is an event of the history
(`pools/services.py` writes them, in the transaction of the change itself: no change without its trace,
no trace of a change that was rolled back). This module decides which events a change makes, the reason
each one reads, and how an actor is spelled:

- a dashboard user: their username;
- an API token: its user's name and the token's clear prefix, e.g. ``alice (API token eipd_Ab12Cd34)``;
- a command: ``cli:<OS user>``;
- the workers on their own: ``system``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .vocabulary import EventKind


@dataclass(frozen=True)
class SpecState:
    """What an auditor asks about a launch spec, in the words of its document (`launchspec apply`)."""

    cluster: str
    labels: str
    tag_key: str
    tag_value: str | None
    enabled: bool
    min_free: int = 0

    def selector(self) -> str:
        return self.tag_key if self.tag_value is None else f"{self.tag_key}={self.tag_value}"


def spec_changes(before: SpecState, after: SpecState, *, with_enabled: bool = True) -> list[str]:
    """The fields that differ, as "field old -> new" in the document's own terms (the sync's diff too)."""
    pairs: list[tuple[str, object, object]] = [
        ("cluster", before.cluster, after.cluster),
        ("labels", before.labels, after.labels),
        ("tagKey", before.tag_key, after.tag_key),
        ("tagValue", before.tag_value, after.tag_value),
        ("minFree", before.min_free, after.min_free),
    ]
    if with_enabled:
        pairs.append(("enabled", before.enabled, after.enabled))
    return [f"{what} {old!r} -> {new!r}" for what, old, new in pairs if old != new]


def spec_events(before: SpecState | None, after: SpecState | None, *, why: str = "") -> list[tuple[str, str]]:
    """(kind, reason) of each event a change of one launch spec makes; none when nothing changed.

    An update that also turns the spec off (or on) makes two events, so that "who disabled it" is one filter:
    `spec_updated` with the other fields' diff, and `spec_disabled` (or `spec_enabled`). `why` names the path
    when it is not the obvious one (a prune)."""
    suffix = f" ({why})" if why else ""
    if before is None and after is None:
        return []
    if before is None:
        assert after is not None
        state = "enabled" if after.enabled else "disabled"
        return [(EventKind.SPEC_CREATED, f"created: cluster {after.cluster!r}, labels {after.labels!r}, pool "
                                         f"{after.selector()!r}, {state}{suffix}")]
    if after is None:
        return [(EventKind.SPEC_DELETED, f"deleted: it held no EIP{suffix}")]
    events: list[tuple[str, str]] = []
    if changes := spec_changes(before, after, with_enabled=False):
        events.append((EventKind.SPEC_UPDATED, ", ".join(changes) + suffix))
    if before.enabled and not after.enabled:
        events.append((EventKind.SPEC_DISABLED, f"disabled: its nodes drain, no new EIP{suffix}"))
    elif after.enabled and not before.enabled:
        events.append((EventKind.SPEC_ENABLED, f"enabled: its nodes get EIPs again{suffix}"))
    return events


@dataclass(frozen=True)
class ClusterState:
    region: str
    kube_context: str
    kubeconfig: str
    # The row's name: a rename changes which documents name it and where old events' node links lead.
    name: str = ""


def cluster_events(name: str, before: ClusterState | None, after: ClusterState | None) -> list[tuple[str, str]]:
    """(kind, reason) of a cluster row added, changed or deleted; none when nothing changed."""
    def shown(state: ClusterState) -> str:
        return (f"region {state.region!r}, kube context {state.kube_context or '(current)'!r}, kubeconfig "
                f"{state.kubeconfig or '(default)'!r}")

    if before is None and after is not None:
        return [(EventKind.CLUSTER_ADDED, f"cluster {name!r} added: {shown(after)}")]
    if after is None and before is not None:
        return [(EventKind.CLUSTER_DELETED, f"cluster {name!r} deleted (was {shown(before)})")]
    if before is None or after is None:
        return []
    pairs = [("name", before.name, after.name), ("region", before.region, after.region),
             ("kube context", before.kube_context, after.kube_context),
             ("kubeconfig", before.kubeconfig, after.kubeconfig)]
    changes = [f"{what} {old!r} -> {new!r}" for what, old, new in pairs if old != new]
    return [(EventKind.CLUSTER_CHANGED, f"cluster {name!r}: " + ", ".join(changes))] if changes else []


# The permissions that let a user change what eipdash does (the operators group holds them all).
WRITE_PERMISSIONS = ("pools.add_launchspec", "pools.change_launchspec", "pools.delete_launchspec",
                     "pools.reassign_elasticip")


def role_of(*, active: bool, superuser: bool, groups: Iterable[str], permissions: Iterable[str] | None = None
            ) -> str:
    """A user's role in the dashboard's words (docs/security.md's table): what they may do, in one word, and
    the write permissions they hold beyond it (granted one by one, or through a group's own permissions):
    "viewer + pools.reassign_elasticip" may move EIPs although the word says viewer."""
    if not active:
        return "inactive"
    if superuser:
        return "admin"
    names = set(groups)
    word = "operator" if "operators" in names else "viewer" if "viewers" in names else "no group"
    held = set(permissions) if permissions is not None else set(WRITE_PERMISSIONS if word == "operator" else ())
    extra = sorted(held & set(WRITE_PERMISSIONS)) if word != "operator" else []
    missing = sorted(set(WRITE_PERMISSIONS) - held) if word == "operator" else []
    return word + "".join(f" + {p}" for p in extra) + "".join(f" - {p}" for p in missing)


def role_event(username: str, before: str, after: str) -> tuple[str, str] | None:
    if before == after:
        return None
    return EventKind.ROLE_CHANGED, f"user {username!r}: {before} -> {after}"


def token_actor(username: str, prefix: str) -> str:
    """An API token's actor: its user, and which of their tokens (the clear prefix, never the secret)."""
    return f"{username} (API token {prefix})"
