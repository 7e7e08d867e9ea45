from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eipdash.settings")

app = Celery("eipdash")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
# Everything else, the beat schedule included, is in settings (CELERY_*): one place, read once.
