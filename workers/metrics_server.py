"""The worker's own /metrics port, for deployments where web and workers do not share a host.

In Kubernetes every pod has its own ``PROMETHEUS_MULTIPROC_DIR`` (an emptyDir): the web's /metrics cannot
see a worker pod's counters. With ``EIPDASH_METRICS_PORT`` set, the Celery worker's main process serves
the counters of all its child processes (the pool counts where the passes run) on that port, on
``EIPDASH_METRICS_ADDR`` (default 127.0.0.1; the manifests set 0.0.0.0). Only the process counters: the
pool gauges come from the database through the web's /metrics, once, not once per worker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY

from pools.metrics import multiproc_dir

log = logging.getLogger(__name__)
_started = False


def start_from_env() -> Any:
    """Start the server when EIPDASH_METRICS_PORT is set (once per process); returns the server or None."""
    global _started
    port = os.environ.get("EIPDASH_METRICS_PORT")
    if not port or _started:
        return None
    addr = os.environ.get("EIPDASH_METRICS_ADDR", "127.0.0.1")
    path = multiproc_dir()
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    server, _thread = start_http_server(int(port), addr=addr, registry=registry)
    _started = True
    log.info("metrics of this worker on http://%s:%s/metrics", addr, port)
    return server


def on_worker_ready(**_kwargs: Any) -> None:
    start_from_env()
