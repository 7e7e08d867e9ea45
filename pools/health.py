"""What /healthz reports: the database, Redis, and how old the last successful pass of each enabled spec is.

Cheap on purpose (a probe calls it every few seconds): one ``SELECT`` of the enabled specs' three columns
and one Redis PING with a one-second timeout.

Two views of one report: anyone (the probes, anonymous) gets the status, the checks and how many enabled specs
are stale; the specs' names and pass ages (which launch specs exist, which are failing) are for readers and the
metrics token. Both views have the same status.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from .models import LaunchSpec

# A pass may be late by a beat or two (a slow pass, a worker restart); three intervals without one is a
# stuck engine.
STALE_INTERVALS = 3
REDIS_TIMEOUT_SECONDS = 1.0

log = logging.getLogger(__name__)

_redis_clients: dict[str, redis.Redis] = {}
_redis_lock = threading.Lock()


def _redis(url: str) -> redis.Redis:
    # One client (and its connection pool) per URL: a probe must not open a new connection every time.
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                          socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
            _redis_clients[url] = client
        return client


@dataclass
class Health:
    # database, redis: "ok", "failing" or "not configured"; no detail (exception texts go to the log).
    checks: dict[str, Any] = field(default_factory=dict)
    # Problems of the services, which name no launch spec.
    service_problems: list[str] = field(default_factory=list)
    # The enabled specs by name, once read: their pass age and whether they are stale.
    specs: dict[str, dict[str, Any]] | None = None
    stale_problems: list[str] = field(default_factory=list)
    interval_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return self.service_problems + self.stale_problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self, *, names: bool = False) -> dict[str, Any]:
        """The report; with `names`, the launch specs by name and the problems naming them, else counts only."""
        if names or not self.stale_problems:
            problems = self.problems
        else:
            count = len(self.stale_problems)
            problems = [*self.service_problems,
                        f"{count} launch spec{'' if count == 1 else 's'} without a successful pass for more than "
                        f"{STALE_INTERVALS} intervals of {self.interval_seconds:g}s"]
        body: dict[str, Any] = {"status": "ok" if self.ok else "failing", "problems": problems, **self.checks}
        if self.specs is not None:
            body["launch_spec_counts"] = {"enabled": len(self.specs),
                                          "stale": sum(1 for spec in self.specs.values() if spec["stale"])}
            if names:
                body["launch_specs"] = self.specs
        return body


def spec_staleness(*, name: str, last_success: datetime | None, created_at: datetime, now: datetime,
                   interval_seconds: float) -> tuple[float | None, bool]:
    """(age of the last successful pass in seconds or None, stale?). A spec younger than the limit is not
    stale even before its first pass."""
    limit = STALE_INTERVALS * interval_seconds
    age = (now - last_success).total_seconds() if last_success is not None else None
    since = last_success if last_success is not None else created_at
    return age, (now - since).total_seconds() > limit


def check(now: datetime, *, scope: str = "all") -> Health:
    """scope "web": the database only (the web pods' own probes: a stuck worker must not restart the
    dashboard that shows it). scope "all": the database, Redis and the passes."""
    health = Health()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        health.checks["database"] = "ok"
    except DatabaseError as exc:
        # /healthz answers without login: the exception text (host, user, database) goes to the log only.
        log.warning("healthz: database: %s", exc)
        health.checks["database"] = "failing"
        health.service_problems.append(f"database: {type(exc).__name__}")
        return health  # nothing else can be read
    if scope == "web":
        return health

    url = settings.REDIS_URL
    if not url:
        health.checks["redis"] = "not configured"
    else:
        try:
            _redis(url).ping()
            health.checks["redis"] = "ok"
        except redis.RedisError as exc:
            log.warning("healthz: redis: %s", exc)
            health.checks["redis"] = "failing"
            health.service_problems.append(f"redis: {type(exc).__name__}")

    interval = float(settings.EIPDASH_RECONCILE_SECONDS)
    specs: dict[str, Any] = {}
    try:
        rows = list(
            LaunchSpec.objects.filter(enabled=True).values_list("name", "last_successful_pass_at", "created_at")
        )
    except DatabaseError as exc:
        # The database answers but the schema is not there (migrations not run yet): a problem, not a 500.
        log.warning("healthz: launch specs: %s", exc)
        health.service_problems.append(
            f"database: cannot read launch specs ({type(exc).__name__}); are migrations applied?")
        return health
    for name, last_success, created_at in rows:
        age, stale = spec_staleness(name=name, last_success=last_success, created_at=created_at, now=now,
                                    interval_seconds=interval)
        specs[name] = {"last_successful_pass_age_seconds": None if age is None else round(age, 1), "stale": stale}
        if stale:
            what = "no successful pass yet" if age is None else f"last successful pass {age:.0f}s ago"
            health.stale_problems.append(
                f"launch spec {name}: {what} (more than {STALE_INTERVALS} intervals of {interval:g}s)"
            )
    health.specs = specs
    health.interval_seconds = interval
    return health
