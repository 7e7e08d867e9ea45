"""Celery tasks: thin. They take ids, call the executor, and decide about retries."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from pools import locks, metrics, selectors
from pools.logs import log_fields
from pools.models import LaunchSpec
from pools.retention import prune_history as prune

from . import executor
from .reassign import expire_stale_requests, run_request

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def reconcile_all() -> int:
    """The beat's safety net: one reconcile_spec per enabled launch spec, and per disabled one that still
    holds EIPs (it drains: its passes release and close by the usual rules, and assign nothing)."""
    if not locks.take_tick():
        return 0  # a tick queued behind another one (no worker ran for a while): that one did the work
    # A manual reassign whose worker died must not stay "moving" on the operator's screen for ever.
    # Housekeeping: its failure is logged and must never stop this tick's passes.
    try:
        with transaction.atomic():  # a savepoint: on PostgreSQL a failed statement must not poison the rest
            expire_stale_requests()
    except DatabaseError:
        log.exception("could not expire stale reassign requests; the passes go on")
    spec_ids = selectors.spec_ids_to_reconcile()
    for spec_id in spec_ids:
        reconcile_spec.delay(spec_id)
    return len(spec_ids)


# A pass that reached its deadline with steps left (a burst of new nodes paced by the EC2 budget) is followed
# at once by a new pass, planned afresh, rather than at the next beat tick; at most this many in a row, after
# which the beat's ticks carry on (a pass that keeps leaving work for a reason that persists).
MAX_FOLLOW_UPS = 50


# No automatic retry: the next beat tick comes within seconds and starts from the world as it is then,
# which is safer than replaying a pass planned on a stale snapshot.
@shared_task(ignore_result=True)
def reconcile_spec(spec_id: int, follow_ups: int = 0) -> list[str]:
    started = time.monotonic()
    try:
        report = executor.reconcile_spec(spec_id)
    except LaunchSpec.DoesNotExist:
        return [f"launch spec {spec_id} no longer exists"]
    except SoftTimeLimitExceeded:
        log.error("launch spec %s: the pass overran its time limit", spec_id)
        raise
    if not report.skipped:  # a skipped pass did no work: it would only flatten the histogram
        metrics.RECONCILE_DURATION.labels(report.spec).observe(time.monotonic() - started)
    # A pass that did nothing (or was skipped) is logged at debug: every few seconds per spec, it would
    # bury the lines that matter.
    routine = report.skipped or (not report.done and not report.errors)
    for line in report.lines():
        log.log(logging.DEBUG if routine else logging.INFO, "%s", line, extra=log_fields(spec=report.spec))
    # A pass skipped as busy has left a rerun request for the holder (executor.holding sends it once the lease is
    # released, whoever held it). A pass that reached its deadline with work left is followed at once.
    if report.left and follow_ups < MAX_FOLLOW_UPS:
        # Its lease is released by now: the next pass (this worker or another) starts from the world as it is.
        reconcile_spec.delay(spec_id, follow_ups + 1)
    return report.lines()


# A first run on years of history may take minutes: batches commit as they go, so a stop loses nothing.
@shared_task(ignore_result=True, soft_time_limit=3600, time_limit=3660)
def prune_history() -> str:
    """The daily retention run (beat): what `manage.py prune_history` does with EIPDASH_RETENTION_DAYS."""
    days = settings.EIPDASH_RETENTION_DAYS
    if days == 0:
        return "retention off (EIPDASH_RETENTION_DAYS=0)"
    line = prune(cutoff=timezone.now() - timedelta(days=days)).line()
    log.info("prune_history: %s (older than %s days)", line, days)
    return line


# No automatic retry either: a move is asked for once. The request row says how it ended, whatever happens.
@shared_task(ignore_result=True)
def reassign(request_id: int) -> str:
    """Carry out an operator's ReassignRequest (recorded by the web, which has no AWS or Kubernetes rights)."""
    line = run_request(request_id)
    log.info("%s", line)
    return line
