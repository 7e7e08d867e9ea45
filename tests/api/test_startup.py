"""The API's libraries load with the first request under /api/ (or the first reverse()), not with a probe's:
a fresh web process answers /healthz without importing Django REST framework or drf-spectacular."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys, django
django.setup()
from django.test import Client
assert Client().get("/healthz?scope=web", HTTP_HOST="localhost").status_code in (200, 503)
print(sorted(m for m in ("rest_framework.views", "drf_spectacular.views") if m in sys.modules))
from django.urls import reverse
reverse("api-launch-spec-list")
print("rest_framework.views" in sys.modules)
"""


def test_a_probe_does_not_load_the_api(tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'probe.sqlite3'}"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "True"]


def test_a_rate_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    for rate, ok in (("20/s", True), ("0/min", False), ("10/week", False)):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "eipdash.settings", "DJANGO_DEBUG": "true",
               "EIPDASH_API_RATE": rate}
        done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) == ok, (rate, done.stderr[-500:])
        assert ok or "EIPDASH_API_RATE" in done.stderr
