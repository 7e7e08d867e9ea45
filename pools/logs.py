"""Structured log fields, and the JSON formatter of ``EIPDASH_LOG_FORMAT=json``.

With the JSON format every record is one object per line: ``timestamp``, ``level``, ``logger``,
``message``, plus ``spec``, ``node``, ``ip`` and ``allocation_id`` when the call passed them with
``extra=log_fields(...)``. With the plain format the fields are simply not shown.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("spec", "node", "ip", "allocation_id")


def log_fields(*, spec: str = "", node: str = "", ip: str = "", allocation_id: str = "") -> dict[str, str]:
    """The ``extra=`` of a log call: only the fields that are known (an empty one is left out)."""
    given = {"spec": spec, "node": node, "ip": ip, "allocation_id": allocation_id}
    return {key: str(value) for key, value in given.items() if value}


class EipdashJsonFormatter(JsonFormatter):
    """One JSON object per line, with stable key names whatever the process (web, worker, beat, watch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "timestamp", "levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", False)
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", *args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging API)
        # ISO 8601 in UTC with milliseconds, whatever the host's time zone.
        stamp = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TaskSuccessWithoutResult(logging.Filter):
    """Celery's "Task … succeeded in 0.05s" line without the task's return value (settings.LOGGING puts it
    on the ``celery.app.trace`` logger).

    A pass returns its report's lines, which the task has just logged one by one: Celery's success line
    printed them all again, so every line of a report showed twice in the worker's console, and in JSON once
    more in the record's ``data``. The task's name, id and run time stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping) and "return_value" in args:
            kept = {key: value for key, value in args.items() if key != "return_value"}
            record.msg = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
            record.args = kept
            if isinstance(getattr(record, "data", None), Mapping):
                record.data = kept
        return True
