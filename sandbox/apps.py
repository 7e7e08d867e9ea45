"""The sandbox as a Django app: only development and test settings install it (EIPDASH_SANDBOX, on by default
with DJANGO_DEBUG), for `manage.py sandbox`. The production image has no sandbox/ package at all."""

from __future__ import annotations

from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "sandbox"
    verbose_name = "eipdash sandbox (EC2 and Kubernetes API emulators)"
