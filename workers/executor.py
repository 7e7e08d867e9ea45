"""The pass entry points: one reconcile pass of one launch spec.

A pass observes the world (workers/observe.py writes what AWS and Kubernetes say into the snapshot), plans
with the pure planner on the snapshot (pools/snapshot.py, pools/planner.py), and applies the plan step by
step (workers/apply.py). A pass that cannot read changes nothing and says so in its report.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from pools.locks import Lease, LeaseLost, spec_lease
from pools.logs import log_fields
from pools.models import SYSTEM_ACTOR, Cluster, LaunchSpec
from pools.planner import plan as make_plan
from pools.snapshot import planner_inputs

from . import budget
from .apply import Executor, PassReport
from .ec2 import Ec2
from .kube import Kube, KubeError, kube_for
from .observe import observe

log = logging.getLogger(__name__)

__all__ = ["PassReport", "clients_for", "reconcile_spec", "run_pass"]


def clients_for(spec: LaunchSpec) -> tuple[Ec2, Kube]:
    return Ec2(spec.cluster.region), kube_for(spec.cluster)


def warm_clients() -> int:
    """Build the EC2 client of every configured region and the Kubernetes client of every cluster now.

    Called in the Celery worker's main process before it forks its pool (workers/apps.py): creating a
    boto3 client loads EC2's service model (about 0.5 s per process), which would otherwise fall on the
    first pass each pool process runs (the first node after a worker start waited ~2 s instead of ~0.5 s).
    The clients are cached per process and hold no connection yet, so the forked processes share them.
    Best effort: a cluster whose client cannot be built now is served as usual, slower the first time."""
    warmed = 0
    for cluster in Cluster.objects.all():
        Ec2(cluster.region)
        try:
            kube_for(cluster)
        except KubeError as exc:
            log.info("cluster %s: Kubernetes client not built ahead (%s)", cluster.name, exc)
            continue
        warmed += 1
    return warmed


def run_pass(spec: LaunchSpec, *, ec2: Ec2 | None = None, kube: Kube | None = None, dry_run: bool = False,
             actor: str = SYSTEM_ACTOR, exclusive: bool = True, lease: Lease | None = None) -> PassReport:
    """Refresh, plan and (unless dry_run) apply, for one spec.

    exclusive: the caller holds the spec's lease. Without it, a recent unconfirmed claim may be another
    process's AWS call in flight, and is left alone for as long as that process may still run.
    lease: checked before the snapshot is written and before every step; once lost, the pass stops and
    says so in its report (the pass that took the lease over carries on from the world as it is).
    Deadline: no step (or slice of assignments) starts after EIPDASH_PASS_SECONDS from here (taints and the
    first step excepted), and no EC2 call waits for a budget token past it (workers/budget.py): the steps left
    are in the report, and the next pass does them from the world as it is then (the Celery task enqueues it
    at once).
    """
    deadline = time.monotonic() + settings.EIPDASH_PASS_SECONDS
    if ec2 is None or kube is None:
        default_ec2, default_kube = clients_for(spec)
        ec2, kube = ec2 or default_ec2, kube or default_kube
    report = PassReport(spec=spec.name)
    try:
        if lease is not None and not dry_run:
            lease.check()
        with budget.deadline(deadline):  # a read that cannot get a token in time is a read that failed
            observed = observe(spec, ec2, kube, record=not dry_run)
        if observed.pool is None:
            return PassReport(spec=spec.name, errors=list(observed.read_errors), read_failed=True)
        pool = observed.pool
        in_flight_since = (None if exclusive
                           else timezone.now() - timedelta(seconds=settings.EIPDASH_SPEC_LOCK_SECONDS))
        plan = make_plan(*planner_inputs(spec, pool=pool, in_flight_since=in_flight_since))
        if dry_run:
            # An empty plan is "nothing to do" (PassReport.lines), never "would nothing to do".
            steps = [line for line in plan.describe() if line != "nothing to do"]
            return PassReport(spec=spec.name, plan=plan, done=[f"would {line}" for line in steps])
        # Built after the refresh: the executor reads the node rows the refresh just wrote.
        executor = Executor(spec, ec2, kube, actor=actor, lease=lease, deadline=deadline)
        report = executor.report
        return executor.apply(plan, read_errors=observed.read_errors)
    except LeaseLost as exc:
        message = f"stopped: {exc}; another pass carries on"
        log.warning("%s: %s", spec.name, message, extra=log_fields(spec=spec.name))
        report.errors.append(message)
        return report


def reconcile_spec(
    spec_id: int, *, dry_run: bool = False, ec2: Ec2 | None = None, kube: Kube | None = None
) -> PassReport:
    spec = LaunchSpec.objects.select_related("cluster").get(pk=spec_id)
    # A dry run changes nothing outside, but it refreshes the snapshot: it waits its turn like a pass.
    with spec_lease(spec.pk, wait_seconds=10 if dry_run else 0) as lease:
        if lease is None:
            return PassReport(spec=spec.name, skipped="another worker is running this spec's pass")
        # Without Redis there is no lease to prove that this pass runs alone.
        return run_pass(spec, ec2=ec2, kube=kube, dry_run=dry_run, exclusive=lease.redis_backed, lease=lease)

