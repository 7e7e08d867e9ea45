"""Test settings: the production module with test-only defaults for what production must be given."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret")
if os.environ.get("REDIS_URL"):
    # This xdist worker's own database of the shared Redis (tests/fixtures/namespace.py), set before the
    # settings derive the broker, the throttle cache and the leases from it; child processes inherit it.
    from tests.fixtures.namespace import worker_redis_url

    os.environ["REDIS_URL"] = worker_redis_url(os.environ["REDIS_URL"])

from eipdash.settings import *  # noqa: E402,F403
from eipdash.settings import DATABASES, INSTALLED_APPS, VAR_DIR  # noqa: E402

if "sandbox" not in INSTALLED_APPS:
    INSTALLED_APPS.append("sandbox")  # the emulators' command, even with DJANGO_DEBUG=false

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that Celery worker processes started by the tests share it; one per
    # pytest process, so that two runs on one checkout never share a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
