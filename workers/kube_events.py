"""Kubernetes Events on the Node for the history events that concern it, so that `kubectl describe node`
tells the story (assign, release, pool exhausted, conflict, errors), as Karpenter does.

Registered as a hook of ``services.event_record`` (workers/apps.py): it runs once the event's transaction
has committed, in the pass's thread, and only resolves there what needs the database (the cluster's
kubeconfig and context, the node names). The Kubernetes calls (a node read for its uid, an Event create)
are made by one daemon thread per process from a bounded queue, so that a burst of assignments does not
wait on them. Best effort: a failure is logged at debug level and counted in
``eipdash_kube_calls_total{verb="create"}``; when the queue is full the event is dropped and counted as
``eipdash_kube_calls_total{verb="create",outcome="dropped"}``; neither ever fails nor slows the step that
recorded the event.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

from pools import metrics
from pools.models import Assignment, Cluster, Event, Node

log = logging.getLogger(__name__)

CONTROLLER = "eipdash.io/controller"
# A pool_exhausted event concerns every waiting node of the spec: at most this many get it.
MAX_NODES_PER_EVENT = 20
# A Kubernetes API that hangs must not hold a pass up for long: the event is not worth it.
REQUEST_TIMEOUT_SECONDS = 3.0
# Events waiting for the background thread; over this many, new ones are dropped (and counted).
QUEUE_SIZE = 1000

# kind: (type, reason, action)
EMITTED = {
    Event.Kind.ASSIGNED: ("Normal", "EIPAssigned", "Assign"),
    Event.Kind.REASSIGNED: ("Normal", "EIPReassigned", "Reassign"),
    Event.Kind.RELEASED: ("Normal", "EIPReleased", "Release"),
    Event.Kind.POOL_EXHAUSTED: ("Warning", "EIPPoolExhausted", "Assign"),
    Event.Kind.CONFLICT: ("Warning", "EIPConflict", "Reconcile"),
    Event.Kind.ERROR: ("Warning", "EIPError", "Reconcile"),
    Event.Kind.EGRESS_NOT_VIA_EIP: ("Warning", "EIPEgressNotViaEIP", "Reconcile"),
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


@dataclass
class KubeTarget:
    """What kube_for needs of a Cluster row, read in the caller's thread (kube.ClusterConfig)."""

    kube_context: str
    kubeconfig: str


@dataclass(frozen=True)
class Emission:
    """The Kubernetes Events of one history event, resolved: no database work is left to do."""

    cluster: str
    target: KubeTarget
    names: tuple[str, ...]
    type_: str
    reason: str
    action: str
    note: str


def resolve(event: Event) -> Emission | None:
    """What to emit for one history event (database reads, the caller's thread); None for nothing."""
    if event.kind not in EMITTED:
        return None
    names = _nodes_for(event)
    if not names:
        return None
    cluster = Cluster.objects.filter(name=event.cluster).values_list("kube_context", "kubeconfig").first()
    if cluster is None:
        return None
    type_, reason, action = EMITTED[Event.Kind(event.kind)]
    note = event.reason
    if event.public_ip:
        note = f"{event.public_ip} ({event.allocation_id}): {note}"
    return Emission(event.cluster, KubeTarget(*cluster), tuple(names), type_, reason, action, note)


def deliver(emission: Emission) -> int:
    """Write the Kubernetes Events of one emission (no database work); returns how many were written."""
    # Imported here: every Django process registers this module's hook, and the Kubernetes client costs
    # a fifth of a second to import in processes that never emit (the web, beat, migrate).
    from .kube import KubeError, kube_for

    try:
        kube = kube_for(emission.target, request_timeout=REQUEST_TIMEOUT_SECONDS)
    except KubeError as exc:
        log.debug("no Kubernetes client for the events of cluster %s: %s", emission.cluster, exc)
        return 0
    written = 0
    for name in emission.names:
        try:
            if kube.emit_node_event(name, type_=emission.type_, reason=emission.reason, action=emission.action,
                                    note=emission.note, controller=CONTROLLER, instance=reporting_instance()):
                written += 1
        except KubeError as exc:
            log.debug("Kubernetes event on node %s not written: %s", name, exc)
    return written


def emit_for(event: Event) -> int:
    """Emit the Kubernetes Events of one history event now, in this thread; returns how many were written."""
    emission = resolve(event)
    return deliver(emission) if emission is not None else 0


class Emitter:
    """A bounded queue and one daemon thread that delivers its emissions, started on first use in each
    process (a forked Celery child starts its own)."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.Queue[Emission] = queue.Queue(size)

    def submit(self, emission: Emission) -> bool:
        """Queue an emission; False (dropped and counted) when the queue is full. Never blocks."""
        q = self._started()
        try:
            q.put_nowait(emission)
        except queue.Full:
            metrics.KUBE_CALLS.labels("create", "dropped").inc()
            log.debug("Kubernetes events queue full: the %s event of %s dropped", emission.reason,
                      ", ".join(emission.names))
            return False
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued emission is delivered (tests, process exit); False on timeout."""
        if self._pid != os.getpid():
            return True  # nothing submitted in this process (a forked child's copy is not its own)
        q = self._queue
        deadline = time.monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(remaining)
        return True

    def _started(self) -> queue.Queue[Emission]:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child whose parent's thread is not here
                self._pid = os.getpid()
                self._queue = queue.Queue(self.size)
                threading.Thread(target=self._run, args=(self._queue,), name="eipdash-kube-events",
                                 daemon=True).start()
            return self._queue

    @staticmethod
    def _run(q: queue.Queue[Emission]) -> None:
        while True:
            emission = q.get()
            try:
                deliver(emission)
            except Exception:  # noqa: BLE001 - best effort by design: the thread must outlive any event
                log.debug("Kubernetes events of %s not written", emission.cluster, exc_info=True)
            finally:
                q.task_done()


emitter = Emitter()
# Give the events still queued a moment to go out when the process ends (daemon threads are cut short).
atexit.register(emitter.wait_idle, 2.0)


def taint_added(cluster: Cluster, node: str, why: str) -> None:
    """A Kubernetes Event for the startup taint put (back) on a node: a change with no history event of its
    own, which `kubectl describe node` must still tell."""
    emitter.submit(Emission(cluster.name, KubeTarget(cluster.kube_context, cluster.kubeconfig), (node,),
                            "Normal", "EIPPending", "Taint", f"startup taint added: {why}"))


def hook(event: Event) -> None:
    emission = resolve(event)
    if emission is not None:
        emitter.submit(emission)


def wait_idle(timeout: float = 10.0) -> bool:
    """Wait until the events handed to the background thread are written (or failed)."""
    return emitter.wait_idle(timeout)
