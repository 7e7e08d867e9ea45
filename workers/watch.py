"""The node watch: the fast path. A node that appears or changes triggers its spec's pass at once,
instead of at the next beat tick. The beat stays the safety net for anything the watch misses.

The watch outlives a broker (Redis) outage: a pass it cannot enqueue is kept and retried with capped
exponential backoff, the outage is logged once when it starts and once when it ends, and the watch resumes.
Exiting instead would stop a supervisor's whole stack (`make run`) or crash-loop a pod, and a restart cannot
reach a broker that is down anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.exceptions
from django import db
from kombu.exceptions import OperationalError

from pools.models import Cluster, LaunchSpec
from pools.snapshot import labels_match

from .kube import Expired, Kube, KubeError, kube_for

log = logging.getLogger(__name__)

# What a publish raises when the broker cannot be reached: Celery wraps the transport's connection errors
# in kombu's OperationalError after its own short publish retries; the rest are what escapes unwrapped
# (a socket error outside the retried section, a redis-py timeout).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


# A cluster whose client cannot be built (its kubeconfig gone, broken or refused) is tried again after the
# watch's retry_seconds, then twice as long each time up to this: about the heartbeat's period (30 s).
LOAD_BACKOFF_MAX_SECONDS = 30.0


def specs_for(labels: dict[str, str], specs: list[LaunchSpec]) -> list[int]:
    return [s.pk for s in specs if labels_match(s.labels, labels)]


def touch(path: Path | None) -> None:
    """The liveness heartbeat: the container probe checks the file's age. Never fatal to the watch."""
    if path is None:
        return
    try:
        path.touch()
    except OSError as exc:
        log.debug("heartbeat %s not written: %s", path, exc)


class Enqueuer:
    """Sends a spec's pass to the broker, and rides out a broker outage.

    `send` blocks while the broker is down, retrying every pass not yet sent after 0.5 s, 1 s, 2 s, ... up
    to `max_backoff`. Blocking is deliberate: nothing can be enqueued meanwhile, the node changes of the
    outage wait in the watch stream (or, if the API server ends the stream, the next watch lists every
    node again), so no change is lost.
    """

    def __init__(
        self,
        enqueue: Callable[[int], object],
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 15.0,
        heartbeat: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enqueue = enqueue
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._heartbeat = heartbeat
        self._sleep = sleep
        self._clock = clock
        self.pending: set[int] = set()
        self.outage_started: float | None = None
        self.outages = 0

    def send(self, spec_id: int, *, deadline: float | None = None) -> bool:
        """Enqueue the pass, retrying through an outage until it is sent (True) or `deadline` passes."""
        self.pending.add(spec_id)
        backoff = self.initial_backoff
        while not self._flush():
            self._heartbeat()
            if deadline is not None and self._clock() + backoff >= deadline:
                return False
            self._sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
        return True

    def _flush(self) -> bool:
        for spec_id in sorted(self.pending):
            try:
                self._enqueue(spec_id)
            except BROKER_ERRORS as exc:
                if self.outage_started is None:
                    self.outage_started = self._clock()
                    self.outages += 1
                    # Once per outage: a retry every few seconds would flood the log for nothing.
                    log.warning("broker unreachable, the node watch keeps going and retries with backoff "
                                "(at most every %.0f s): %s", self.max_backoff, exc)
                return False
            self.pending.discard(spec_id)
        if self.outage_started is not None:
            log.warning("broker reachable again after %.1f s; the node watch resumed",
                        self._clock() - self.outage_started)
            self.outage_started = None
        return True


class Spaced:
    """A spec's passes at most two per `interval` (a node that changes ten times in a second needs one pass, and the
    pass is single-flight anyway), and never a change left without one: a change inside the interval is sent when
    the interval ends, by a timer, and the next change after that is sent at once. Dropping it instead left a node
    that registered a second after another one waiting for the next beat tick (the time-to-EIP benchmark's first
    node after its canary: 2.5 s, not 0.6 s)."""

    def __init__(self, send: Callable[[int], bool], interval: float) -> None:
        self._send, self.interval = send, interval
        self._lock = threading.Lock()
        self._last: dict[int, float] = {}  # spec id -> when its pass was last sent (time.monotonic())
        self._timers: dict[int, threading.Timer] = {}

    def send(self, spec_id: int, why: str) -> bool:
        """False when the pass could not be sent (the watch must stop); a pass put off is True."""
        with self._lock:
            wait = self._last.get(spec_id, float("-inf")) + self.interval - time.monotonic()
            if wait <= 0:
                log.info("%s: reconcile spec %s", why, spec_id)
                return self._now(spec_id)
            if spec_id not in self._timers:
                log.info("%s: reconcile spec %s in %.1f s (one pass per %g s)", why, spec_id, wait, self.interval)
                timer = threading.Timer(wait, self._later, args=(spec_id,))
                timer.daemon = True
                self._timers[spec_id] = timer
                timer.start()
            return True

    def _later(self, spec_id: int) -> None:
        # Not counted as the interval's pass: most changes inside an interval are the echoes of the pass's own
        # writes (its label, its taint lift), and a node that registers a second later must not wait for them.
        with self._lock:
            if self._timers.pop(spec_id, None) is not None:
                self._send(spec_id)

    def _now(self, spec_id: int) -> bool:
        sent = self._send(spec_id)
        if sent:
            self._last[spec_id] = time.monotonic()  # from the moment it was sent: after an outage, a fresh one
        return sent

    def cancel(self) -> None:
        """The watch ends: the passes put off are not sent (the beat's ticks serve the specs from here)."""
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()


class ClientLoader:
    """A cluster's client, asked for before every watch round: the same cached client while its kubeconfig is
    unchanged (workers/kube.py), a new one once the file changed. A kubeconfig that cannot be loaded is one
    warning when that starts and one line when it loads again, with quiet retries and backoff in between:
    never a traceback per retry, nor a dead watch thread."""

    def __init__(self, cluster: Cluster, *, retry_seconds: float,
                 max_backoff: float = LOAD_BACKOFF_MAX_SECONDS) -> None:
        self.cluster = cluster
        self.retry_seconds = retry_seconds
        self.max_backoff = max(max_backoff, retry_seconds)
        self.wait = retry_seconds  # before the next try, after a failed one
        self.failing = False

    def load(self) -> Kube | None:
        try:
            kube = kube_for(self.cluster)
        except KubeError as exc:
            if not self.failing:
                self.failing, self.wait = True, self.retry_seconds
                log.warning("cluster %s: no Kubernetes client (%s); its node watch tries again with backoff "
                            "(at most every %.0f s)", self.cluster.name, exc, self.max_backoff)
            else:
                self.wait = min(self.wait * 2, self.max_backoff)
                log.debug("cluster %s: still no Kubernetes client (%s); next try in %.1f s", self.cluster.name, exc,
                          self.wait)
            return None
        if self.failing:
            self.failing = False
            log.warning("cluster %s: its kubeconfig loads again; its node watch resumes", self.cluster.name)
        return kube


class NodeWatch:
    """One cluster's node watch: list once, then watch from the list's resourceVersion.

    The last resourceVersion seen, from events and from BOOKMARKs, is kept, and a watch that ends (the
    server's timeout, a cut connection) resumes from it: nothing is listed again and no change is missed.
    Only a 410 Gone (the version fell out of the server's history) lists every node again; the specs of
    the nodes that changed meanwhile (added, modified, deleted, as the kept resourceVersions tell) get a
    pass, the others need none. The first list, at start, is such a re-list from nothing: every spec with
    a node gets a pass, as a restarted watch always did.
    """

    def __init__(self, cluster: Cluster, kube: Kube, send: Callable[[str, str, int], bool], *,
                 round_seconds: int = 30) -> None:
        self.cluster = cluster
        self.kube = kube
        self.send = send  # send(node, event, spec_id) -> False when the watch must stop
        self.round_seconds = round_seconds
        self.resource_version = ""  # "" = list before watching
        # Each node's last resourceVersion and labels, to tell after a re-list which nodes changed.
        self.nodes: dict[str, tuple[str, dict[str, str]]] = {}
        self.lists = 0  # how many times every node was listed (the first included)

    def specs(self) -> list[LaunchSpec]:
        return list(LaunchSpec.objects.filter(cluster=self.cluster, enabled=True))

    def relist(self) -> bool:
        listed, version = self.kube.list_nodes_versioned()
        self.lists += 1
        now = {n.name: (n.resource_version, n.labels) for n in listed}
        changed: list[tuple[str, str, dict[str, str]]] = []
        for name, (version_now, labels) in now.items():
            before = self.nodes.get(name)
            if before is None:
                changed.append((name, "added", labels))
            elif before[0] != version_now:
                changed.append((name, "modified", labels))
        changed += [(name, "deleted", labels) for name, (_, labels) in self.nodes.items() if name not in now]
        self.nodes = now
        self.resource_version = version
        specs = self.specs()
        return all(self.send(name, event, spec_id) for name, event, labels in changed
                   for spec_id in specs_for(labels, specs))

    def round(self) -> bool:
        """List if needed, then one watch until the server ends it; False when the watch must stop."""
        if not self.resource_version and not self.relist():
            return False
        specs = self.specs()
        try:
            for event in self.kube.watch_nodes(resource_version=self.resource_version,
                                               timeout_seconds=self.round_seconds):
                if event.resource_version:
                    self.resource_version = event.resource_version
                node = event.node
                if node is None:  # BOOKMARK: only the version moves
                    continue
                if event.type == "DELETED":
                    self.nodes.pop(node.name, None)
                else:
                    self.nodes[node.name] = (node.resource_version, node.labels)
                # A DELETED node matters too: its EIP goes back to the pool.
                for spec_id in specs_for(node.labels, specs):
                    if not self.send(node.name, event.type.lower(), spec_id):
                        return False
        except Expired as exc:
            log.info("cluster %s: the node watch's version expired (%s): listing the nodes again",
                     self.cluster.name, exc)
            self.resource_version = ""
        return True


def watch_cluster(
    cluster: Cluster,
    enqueue: Callable[[int], object],
    *,
    kube: Kube | None = None,
    min_interval: float = 1.0,
    stop_after: float | None = None,
    heartbeat_file: Path | None = None,
    max_backoff: float = 15.0,
    stop: threading.Event | None = None,
    round_seconds: int = 30,
    retry_seconds: float = 2.0,
) -> NodeWatch | None:
    """Watch the cluster's nodes and enqueue the pass of every spec a changed node belongs to.

    A spec's passes are spaced by `min_interval` (Spaced): a node that changes ten times in a second needs one
    pass, and the pass itself is single-flight anyway; a change inside the interval is sent when it ends.
    `heartbeat_file` is touched at least once per watch round (`round_seconds`) and during a broker outage, for
    a liveness probe. A client that cannot
    be built (its kubeconfig gone, broken or refused) is tried again with backoff (ClientLoader). Returns once
    `stop_after` seconds have passed, `stop` is set, or the cluster is no longer configured.
    """
    stop = stop or threading.Event()
    deadline = None if stop_after is None else time.monotonic() + stop_after
    loader = None if kube is not None else ClientLoader(cluster, retry_seconds=retry_seconds)
    enqueuer = Enqueuer(enqueue, max_backoff=max_backoff, heartbeat=lambda: touch(heartbeat_file))
    spaced = Spaced(lambda spec_id: enqueuer.send(spec_id, deadline=deadline), min_interval)

    def over() -> bool:
        return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    def send(name: str, event: str, spec_id: int) -> bool:
        touch(heartbeat_file)
        return spaced.send(spec_id, f"node {name} {event}") and not over()

    def start(client: Kube) -> NodeWatch:
        return NodeWatch(cluster, client, send, round_seconds=round_seconds)

    try:
        return _watch_rounds(cluster, kube, loader, start, over, stop, deadline, heartbeat_file,
                             round_seconds=round_seconds, retry_seconds=retry_seconds)
    finally:
        spaced.cancel()


def _watch_rounds(cluster: Cluster, kube: Kube | None, loader: ClientLoader | None,
                  start: Callable[[Kube], NodeWatch], over: Callable[[], bool], stop: threading.Event,
                  deadline: float | None, heartbeat_file: Path | None, *, round_seconds: int,
                  retry_seconds: float) -> NodeWatch | None:
    node_watch: NodeWatch | None = None
    while not over():
        touch(heartbeat_file)
        configured = Cluster.objects.filter(pk=cluster.pk).values_list("kube_context", "kubeconfig").first()
        if configured is None:
            log.info("cluster %s is no longer configured: its node watch ends", cluster.name)
            break
        if configured != (cluster.kube_context, cluster.kubeconfig):
            # The passes already use the new settings; a watch left on the old API server would feed them
            # nothing. Ending here lets watch_clusters start it again from the row as it is now.
            log.info("cluster %s: its kube context or kubeconfig changed; its node watch starts again with them",
                     cluster.name)
            break
        current = kube if loader is None else loader.load()
        if current is None:  # only a loader answers None
            wait = loader.wait if loader is not None else retry_seconds
            stop.wait(wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic())))
            continue
        node_watch = _follow(node_watch, current, start)
        if deadline is not None:  # a round ends with the server's timeout: never past our own
            node_watch.round_seconds = max(1, min(round_seconds, int(deadline - time.monotonic()) + 1))
        try:
            if not node_watch.round():
                break
        except KubeError as exc:
            log.warning("cluster %s: node watch interrupted (%s); resuming in %.0f s", cluster.name, exc,
                        retry_seconds)
            stop.wait(retry_seconds)
    return node_watch


def _follow(node_watch: NodeWatch | None, kube: Kube, start: Callable[[Kube], NodeWatch]) -> NodeWatch:
    """The watch on this client: the same watch while the client is the same; on a new client (its kubeconfig
    changed, or its credentials were reloaded) the watch goes on from its version, or lists again when the
    client talks to another API server, whose versions mean nothing here."""
    if node_watch is None:
        return start(kube)
    if node_watch.kube.api_client is not kube.api_client:  # each kube_for is a new Kube on the cached client
        if node_watch.kube.api_client.configuration.host != kube.api_client.configuration.host:
            node_watch.resource_version = ""
        node_watch.kube = kube
    return node_watch


def watch_clusters(
    enqueue: Callable[[int], object],
    *,
    stop_after: float | None = None,
    heartbeat_file: Path | None = None,
    max_backoff: float = 15.0,
    recheck_seconds: float = 5.0,
    started: Callable[[Cluster], None] = lambda cluster: None,
    stop: threading.Event | None = None,
    **options: Any,
) -> None:
    """One node watch per configured cluster, each in its own thread with its own client and its own
    stream. The list of clusters is read again every `recheck_seconds`: a cluster added later gets its
    watch then, and a watch that ended on an unexpected error is started again. One cluster's failures
    (an API server down, a broken kubeconfig) never stop the others' watches."""
    stop = stop or threading.Event()
    deadline = None if stop_after is None else time.monotonic() + stop_after
    threads: dict[int, threading.Thread] = {}

    def run(cluster: Cluster) -> None:
        try:
            watch_cluster(cluster, enqueue, stop_after=None if deadline is None else deadline - time.monotonic(),
                          heartbeat_file=heartbeat_file, max_backoff=max_backoff, stop=stop, **options)
        except Exception:
            log.exception("cluster %s: the node watch failed; it starts again within %.0f s", cluster.name,
                          recheck_seconds)
        finally:
            db.connection.close()  # this thread's own connection

    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            touch(heartbeat_file)
            for cluster in Cluster.objects.order_by("name"):
                thread = threads.get(cluster.pk)
                if thread is None or not thread.is_alive():
                    if thread is None:
                        started(cluster)
                    thread = threading.Thread(target=run, args=(cluster,), name=f"watch {cluster.name}",
                                              daemon=True)
                    threads[cluster.pk] = thread
                    thread.start()
            stop.wait(recheck_seconds if deadline is None else
                      max(0.0, min(recheck_seconds, deadline - time.monotonic())))
    finally:
        stop.set()
        for thread in threads.values():
            thread.join(timeout=recheck_seconds + 5)
