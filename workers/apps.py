from __future__ import annotations

from django.apps import AppConfig


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
