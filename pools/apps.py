from __future__ import annotations

from django.apps import AppConfig


class PoolsConfig(AppConfig):
    name = "pools"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Numeric IPv4 order on SQLite too (a function on each new connection); see pools/dbfunctions.py.
        from . import dbfunctions, signals

        dbfunctions.install()
        signals.connect()
