"""Kubernetes Events on the Node for the history events that concern it, so that `kubectl describe node`
tells the story (assign, release, pool exhausted, conflict, errors), as Karpenter does.

Registered as a hook of ``services.event_record`` (workers/apps.py): it runs once the event's transaction
has committed. Best effort: a failure is logged at debug level and counted in
``eipdash_kube_calls_total{verb="create"}``, and never fails the step that recorded the event.
"""

from __future__ import annotations

import logging
import os
import socket

from pools.models import Assignment, Cluster, Event, Node

from .kube import KubeError, kube_for

log = logging.getLogger(__name__)

CONTROLLER = "eipdash.io/controller"
# A pool_exhausted event concerns every waiting node of the spec: at most this many get it.
MAX_NODES_PER_EVENT = 20
# A Kubernetes API that hangs must not hold a pass up for long: the event is not worth it.
REQUEST_TIMEOUT_SECONDS = 3.0

# kind: (type, reason, action)
EMITTED = {
    Event.Kind.ASSIGNED: ("Normal", "EIPAssigned", "Assign"),
    Event.Kind.REASSIGNED: ("Normal", "EIPReassigned", "Reassign"),
    Event.Kind.RELEASED: ("Normal", "EIPReleased", "Release"),
    Event.Kind.POOL_EXHAUSTED: ("Warning", "EIPPoolExhausted", "Assign"),
    Event.Kind.CONFLICT: ("Warning", "EIPConflict", "Reconcile"),
    Event.Kind.ERROR: ("Warning", "EIPError", "Reconcile"),
}


def reporting_instance() -> str:
    """The pod's name (POD_NAME from the downward API in the manifests), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def _nodes_for(event: Event) -> list[str]:
    if event.node:
        return [event.node]
    if event.kind == Event.Kind.POOL_EXHAUSTED and event.launch_spec:
        # The spec's nodes still waiting: live, not draining, without an open assignment.
        return list(
            Node.objects.filter(launch_spec__name=event.launch_spec, cluster__name=event.cluster,
                                deleted_at__isnull=True, draining=False)
            .exclude(pk__in=Assignment.objects.filter(closed_at__isnull=True).values("node_id"))
            .order_by("first_seen_at").values_list("name", flat=True)[:MAX_NODES_PER_EVENT]
        )
    return []


def emit_for(event: Event) -> int:
    """Emit the Kubernetes Events of one history event; returns how many were written."""
    if event.kind not in EMITTED:
        return 0
    names = _nodes_for(event)
    if not names:
        return 0
    cluster = Cluster.objects.filter(name=event.cluster).first()
    if cluster is None:
        return 0
    type_, reason, action = EMITTED[Event.Kind(event.kind)]
    note = event.reason
    if event.public_ip:
        note = f"{event.public_ip} ({event.allocation_id}): {note}"
    try:
        kube = kube_for(cluster, request_timeout=REQUEST_TIMEOUT_SECONDS)
    except KubeError as exc:
        log.debug("no Kubernetes client for the events of cluster %s: %s", cluster.name, exc)
        return 0
    written = 0
    for name in names:
        try:
            if kube.emit_node_event(name, type_=type_, reason=reason, action=action, note=note,
                                    controller=CONTROLLER, instance=reporting_instance()):
                written += 1
        except KubeError as exc:
            log.debug("Kubernetes event on node %s not written: %s", name, exc)
    return written


def hook(event: Event) -> None:
    emit_for(event)
