"""Celery tasks: thin. They take ids, call the executor, and decide about retries."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db.models import Q

from pools.models import LaunchSpec

from . import executor
from .reassign import expire_stale_requests, run_request

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def reconcile_all() -> int:
    """The beat's safety net: one reconcile_spec per enabled launch spec, and per disabled one that still
    holds EIPs (it drains: its passes release and close by the usual rules, and assign nothing)."""
    # A manual reassign whose worker died must not stay "moving" on the operator's screen for ever.
    expire_stale_requests()
    spec_ids = list(
        LaunchSpec.objects.filter(Q(enabled=True) | Q(assignments__closed_at__isnull=True))
        .distinct().values_list("pk", flat=True)
    )
    for spec_id in spec_ids:
        reconcile_spec.delay(spec_id)
    return len(spec_ids)


# No automatic retry: the next beat tick comes within seconds and starts from the world as it is then,
# which is safer than replaying a pass planned on a stale snapshot.
@shared_task(ignore_result=True)
def reconcile_spec(spec_id: int) -> list[str]:
    try:
        report = executor.reconcile_spec(spec_id)
    except LaunchSpec.DoesNotExist:
        return [f"launch spec {spec_id} no longer exists"]
    except SoftTimeLimitExceeded:
        log.error("launch spec %s: the pass overran its time limit", spec_id)
        raise
    for line in report.lines():
        log.info("%s", line)
    return report.lines()


# No automatic retry either: a move is asked for once. The request row says how it ended, whatever happens.
@shared_task(ignore_result=True)
def reassign(request_id: int) -> str:
    """Carry out an operator's ReassignRequest (recorded by the web, which has no AWS or Kubernetes rights)."""
    line = run_request(request_id)
    log.info("%s", line)
    return line
