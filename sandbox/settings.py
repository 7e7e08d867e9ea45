"""Settings of the Docker `sandbox` image: the production settings plus the sandbox app, so that
`manage.py sandbox` exists there (and only there, besides development checkouts and the tests)."""

from __future__ import annotations

from eipdash.settings import *  # noqa: F403
from eipdash.settings import INSTALLED_APPS

if "sandbox" not in INSTALLED_APPS:
    INSTALLED_APPS.append("sandbox")
