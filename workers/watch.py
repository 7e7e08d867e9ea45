"""The node watch: the fast path. A node that appears or changes triggers its spec's pass at once,
instead of at the next beat tick. The beat stays the safety net for anything the watch misses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pools.models import Cluster, LaunchSpec
from pools.snapshot import labels_match

from .kube import Kube, KubeError

log = logging.getLogger(__name__)


def specs_for(labels: dict[str, str], specs: list[LaunchSpec]) -> list[int]:
    return [s.pk for s in specs if labels_match(s.labels, labels)]


def watch_cluster(
    cluster: Cluster,
    enqueue: Callable[[int], object],
    *,
    kube: Kube | None = None,
    min_interval: float = 1.0,
    stop_after: float | None = None,
) -> None:
    """Watch the cluster's nodes and enqueue the pass of every spec a changed node belongs to.

    A spec is enqueued at most once per `min_interval`: a node that changes ten times in a second
    needs one pass, and the pass itself is single-flight anyway.
    """
    kube = kube or Kube(context=cluster.kube_context or None)
    last_enqueued: dict[int, float] = {}
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        specs = list(LaunchSpec.objects.filter(cluster=cluster, enabled=True))
        try:
            for event, node in kube.watch_nodes(timeout_seconds=30):
                # A DELETED node matters too: its EIP goes back to the pool.
                for spec_id in specs_for(node.labels, specs):
                    now = time.monotonic()
                    if now - last_enqueued.get(spec_id, 0.0) >= min_interval:
                        last_enqueued[spec_id] = now
                        log.info("node %s %s: reconcile spec %s", node.name, event.lower(), spec_id)
                        enqueue(spec_id)
                if deadline is not None and time.monotonic() >= deadline:
                    return
        except KubeError as exc:
            log.warning("node watch interrupted (%s); resuming in 2 s", exc)
            time.sleep(2)
