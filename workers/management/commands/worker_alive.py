"""`manage.py worker_alive`: the liveness probe of a Celery worker container.

Exit 0 when the worker answers a ping through the broker, 1 when the broker answers but the worker does not
(a stuck worker: restarting it helps). When the broker itself cannot be reached the answer is 0: the worker
keeps reconnecting on its own, and restarting every worker during a Redis outage would only add a crash
loop to the outage.
"""

from __future__ import annotations

import socket
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError

from eipdash.celery import app


class Command(BaseCommand):
    help = "Liveness of a Celery worker: exit 1 if the broker answers but the worker does not reply to a ping."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--node", default=f"celery@{socket.gethostname()}",
            help="the worker's node name (default: celery@<this host>, Celery's own default name)",
        )
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")

    def handle(self, *args: Any, **options: Any) -> None:
        node: str = options["node"]
        timeout: float = options["timeout"]
        with app.connection_for_write() as connection:
            try:
                connection.ensure_connection(max_retries=1, timeout=timeout)
            except (OperationalError, OSError) as exc:
                self.stdout.write(f"broker unreachable ({exc}); not the worker's fault, reported alive")
                return
            replies = app.control.ping(destination=[node], timeout=timeout, connection=connection)
        if not any(node in reply for reply in replies or []):
            raise CommandError(f"{node} did not answer a ping within {timeout:g}s", returncode=1)
        self.stdout.write(f"{node} is alive")
