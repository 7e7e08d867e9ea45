from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

from .env import env_int

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eipdash.settings")

app = Celery("eipdash")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])

RECONCILE_SECONDS = env_int("EIPDASH_RECONCILE_SECONDS", 5)

app.conf.beat_schedule = {
    # The safety net: every enabled launch spec is reconciled against EC2 and Kubernetes on this beat,
    # whatever the node watch saw or missed.
    "reconcile-all": {
        "task": "workers.tasks.reconcile_all",
        "schedule": float(RECONCILE_SECONDS),
        # A tick that waited longer than one period is stale: the next one is already queued.
        "options": {"expires": float(RECONCILE_SECONDS)},
    },
    # Retention (EIPDASH_RETENTION_DAYS, 0: off): once a day, at a quiet time, in small batches.
    "prune-history": {
        "task": "workers.tasks.prune_history",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3600.0},
    },
}
