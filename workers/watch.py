"""The node watch: the fast path. A node that appears or changes triggers its spec's pass at once,
instead of at the next beat tick. The beat stays the safety net for anything the watch misses.

The watch outlives a broker (Redis) outage: a pass it cannot enqueue is kept and retried with capped
exponential backoff, the outage is logged once when it starts and once when it ends, and the watch resumes.
Exiting instead would stop a supervisor's whole stack (`make run`) or crash-loop a pod, and a restart cannot
reach a broker that is down anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import redis.exceptions
from kombu.exceptions import OperationalError

from pools.models import Cluster, LaunchSpec
from pools.snapshot import labels_match

from .kube import Kube, KubeError, kube_for

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


def watch_cluster(
    cluster: Cluster,
    enqueue: Callable[[int], object],
    *,
    kube: Kube | None = None,
    min_interval: float = 1.0,
    stop_after: float | None = None,
    heartbeat_file: Path | None = None,
    max_backoff: float = 15.0,
) -> None:
    """Watch the cluster's nodes and enqueue the pass of every spec a changed node belongs to.

    A spec is enqueued at most once per `min_interval`: a node that changes ten times in a second
    needs one pass, and the pass itself is single-flight anyway. `heartbeat_file` is touched at least once
    per watch round (30 s) and during a broker outage, for a liveness probe.
    """
    kube = kube or kube_for(cluster)
    enqueuer = Enqueuer(enqueue, max_backoff=max_backoff, heartbeat=lambda: touch(heartbeat_file))
    last_enqueued: dict[int, float] = {}
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        touch(heartbeat_file)
        specs = list(LaunchSpec.objects.filter(cluster=cluster, enabled=True))
        try:
            for event, node in kube.watch_nodes(timeout_seconds=30):
                touch(heartbeat_file)
                # A DELETED node matters too: its EIP goes back to the pool.
                for spec_id in specs_for(node.labels, specs):
                    now = time.monotonic()
                    if now - last_enqueued.get(spec_id, 0.0) >= min_interval:
                        log.info("node %s %s: reconcile spec %s", node.name, event.lower(), spec_id)
                        if not enqueuer.send(spec_id, deadline=deadline):
                            return
                        # From the moment it was sent: a pass sent after an outage is a fresh one.
                        last_enqueued[spec_id] = time.monotonic()
                if deadline is not None and time.monotonic() >= deadline:
                    return
        except KubeError as exc:
            log.warning("node watch interrupted (%s); resuming in 2 s", exc)
            time.sleep(2)
