from __future__ import annotations

import logging

from django.apps import AppConfig

log = logging.getLogger(__name__)


class WorkersConfig(AppConfig):
    name = "workers"

    def ready(self) -> None:
        # History events about a node also become Kubernetes Events on it (best effort, after commit).
        from pools import services

        from .kube_events import hook

        if hook not in services.EVENT_HOOKS:
            services.EVENT_HOOKS.append(hook)

        # The worker's metrics port (EIPDASH_METRICS_PORT), once the worker is up: see metrics_server.py.
        from celery.signals import worker_ready

        from .metrics_server import on_worker_ready

        worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="eipdash-metrics-server")

        # The SDK clients, built once in the worker's main process before its pool forks (executor.py).
        from celery.signals import worker_init

        worker_init.connect(_warm_clients, weak=False, dispatch_uid="eipdash-warm-clients")


def _warm_clients(**_: object) -> None:
    from django import db

    from .executor import warm_clients

    try:
        warm_clients()
    except db.DatabaseError as exc:  # the pool starts anyway; the first passes build their clients
        log.warning("SDK clients not built ahead: %s", exc)
    finally:
        db.connections.close_all()  # the parent's own connection: never handed down to the forked pool
