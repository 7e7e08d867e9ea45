"""The startup taint goes (back) on: a node of the spec that could take pods and holds no EIP (I1)."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import DatabaseError

from pools.locks import LeaseLost

from .. import kube_events
from ..kube import KubeError
from ..kube import NotFound as KubeNotFound
from ..pass_context import PassContext


def taint_all(ctx: PassContext, names: Sequence[str]) -> None:
    """Every node of the spec that could take pods and holds no EIP gets the startup taint back, concurrently.
    Never limited by the deadline."""
    if not names:
        return
    ctx.check()
    taint = settings.EIPDASH_STARTUP_TAINT
    for outcome in ctx.concurrently(lambda name: ctx.kube.add_startup_taint(name, taint, fence=ctx.fence),
                                    list(names)):
        name = outcome.item
        if isinstance(outcome.error, LeaseLost):
            raise outcome.error  # a newer holder wrote the node: this pass writes nothing more
        try:
            if outcome.error is not None:
                raise outcome.error
            ctx.tainted(name)
        except (KubeError, DatabaseError) as exc:
            ctx.failed(f"add the startup taint to {name}", exc, node=name, kind="taint")
            continue
        if outcome.value:
            ctx.report.done.append(f"added the startup taint to {name}: schedulable without an EIP")
            kube_events.taint_added(ctx.spec.cluster, name, "schedulable without an EIP")


def retaint(ctx: PassContext, name: str, why: str = "its EIP is about to leave it") -> bool:
    """Put the startup taint back on one node before its EIP leaves it (I1): by name, so that if the name
    already belongs to a new node, that one (which holds no EIP either) is tainted too. False when the node
    object is gone: nothing can be scheduled on it."""
    try:
        added = ctx.kube.add_startup_taint(name, settings.EIPDASH_STARTUP_TAINT, fence=ctx.fence)
    except KubeNotFound:
        return False
    ctx.tainted(name)
    if added:
        kube_events.taint_added(ctx.spec.cluster, name, why)
    return True
