"""The pass entry points: one reconcile pass of one launch spec.

A pass observes the world (workers/observe.py writes what AWS and Kubernetes say into the snapshot), plans
with the pure planner on the snapshot (pools/snapshot.py, pools/planner.py), and applies the plan step by
step (workers/apply.py). A pass that cannot read changes nothing and says so in its report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pools import locks, services
from pools.alerts import Alert, alert_key
from pools.locks import Lease, LeaseLost, spec_lease
from pools.logs import log_fields
from pools.models import SYSTEM_ACTOR, Cluster, Event, LaunchSpec
from pools.planner import plan as make_plan
from pools.snapshot import planner_inputs

from . import budget
from .apply import Executor, PassReport
from .ec2 import Ec2
from .kube import Kube, KubeError, kube_for
from .observe import error_text, observe
from .region_facts import refresh_region_facts

log = logging.getLogger(__name__)
# A spec whose cluster's kubeconfig cannot be loaded (workers/kube.py KubeconfigError): one `error` event per
# episode, which ends at the first pass that loads it again. A subject of read-failed: nothing can be read.
KUBECONFIG_ALERT = alert_key(Alert.READ_FAILED, "kubeconfig")

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

    exclusive: the caller holds the spec's lease in Redis. Without it, a recent unconfirmed claim may be
    another process's AWS call in flight, and is left alone for as long as that process may still run.
    lease: its fencing number fences every write of the pass (pools/locks.py); once lost, the pass stops and
    says so in its report (the pass that took the spec over carries on from the world as it is). An unconfirmed
    claim of an earlier holder is left alone until the longest call that holder could still make is over.
    Deadline: no step (or slice of assignments) starts after EIPDASH_PASS_SECONDS from here (taints and the
    first step excepted), and no EC2 call waits for a budget token past it (workers/budget.py): the steps left
    are in the report, and the next pass does them from the world as it is then (the Celery task enqueues it
    at once).
    """
    deadline = time.monotonic() + settings.EIPDASH_PASS_SECONDS
    report = PassReport(spec=spec.name)
    fenced = lease.fenced if lease is not None and not dry_run else transaction.atomic
    try:
        clients = _pass_clients(spec, ec2, kube, dry_run=dry_run, fenced=fenced)
        if isinstance(clients, PassReport):
            return clients
        ec2, kube = clients
        if lease is not None and not dry_run:
            lease.check()
        with budget.deadline(deadline):  # a read that cannot get a token in time is a read that failed
            observed = observe(spec, ec2, kube, record=not dry_run, fenced=fenced)
        if observed.pool is None:
            return PassReport(spec=spec.name, errors=list(observed.read_errors), read_failed=True)
        if observed.quiet.skipped:
            return Executor(spec, ec2, kube, actor=actor, lease=lease, deadline=deadline).quiet()
        fence = lease.fence if lease is not None else 0
        clock = lease.server_time() if lease is not None else None
        if lease is not None and fence and not dry_run:
            with fenced():
                services.claims_seen_stale(spec=spec, fence=fence, now=clock, renewals=lease.last_renewals)
        inputs = planner_inputs(spec, pool=observed.pool, fence=fence, exclusive=exclusive, now=clock)
        plan = make_plan(*inputs)
        if dry_run:
            # An empty plan is "nothing to do" (PassReport.lines), never "would nothing to do".
            steps = [line for line in plan.describe() if line != "nothing to do"]
            return PassReport(spec=spec.name, plan=plan, done=[f"would {line}" for line in steps])
        _view, eips, nodes, claims = inputs
        with fenced():  # the spec page's plan (selectors.plan_preview): kept, never recomputed on a request
            services.spec_plan_store(spec=spec, plan=plan, eips=eips, nodes=nodes, claims=claims, fence=fence,
                                     planned_at=clock)
        # Built after the refresh: the executor reads the node rows the refresh just wrote.
        executor = Executor(spec, ec2, kube, actor=actor, lease=lease, deadline=deadline)
        report = executor.report
        report = executor.apply(plan, read_errors=observed.read_errors, fingerprint=observed.quiet.fingerprint)
        return report
    except LeaseLost as exc:
        message = f"stopped: {exc}; another pass carries on"
        log.warning("%s: %s", spec.name, message, extra=log_fields(spec=spec.name))
        report.errors.append(message)
        return report


def _pass_clients(spec: LaunchSpec, ec2: Ec2 | None, kube: Kube | None, *, dry_run: bool,
                  fenced: Callable[[], AbstractContextManager[None]]) -> tuple[Ec2, Kube] | PassReport:
    """The pass's clients (the caller's, else its cluster's); the report of a pass that has none."""
    if ec2 is not None and kube is not None:
        return ec2, kube
    try:
        default_ec2, default_kube = clients_for(spec)
    except KubeError as exc:  # its cluster's kubeconfig is gone, broken or refused (KubeconfigError)
        return _no_client(spec, exc, record=not dry_run, fenced=fenced)
    if not dry_run:
        _client_loads(spec, fenced)
    return ec2 or default_ec2, kube or default_kube


def _no_client(spec: LaunchSpec, exc: KubeError, *, record: bool,
               fenced: Callable[[], AbstractContextManager[None]]) -> PassReport:
    """The spec's cluster has no Kubernetes client: nothing is read or written outside, and the pass ends as
    one that could not read. Recorded as one `error` event per episode (KUBECONFIG_ALERT), not one per pass."""
    message = error_text(f"load the kubeconfig of cluster {spec.cluster.name}", exc)
    log.warning("%s: %s", spec.name, message, extra=log_fields(spec=spec.name))
    if record:
        with fenced():
            active = set(LaunchSpec.objects.filter(pk=spec.pk).values_list("active_alerts", flat=True).first() or [])
            if KUBECONFIG_ALERT not in active:
                services.event_record(kind=Event.Kind.ERROR, context=services.event_context(spec=spec),
                                      reason=message[:2000])
            # The other alerts stay as the last pass that could read left them: nothing is known anew.
            LaunchSpec.objects.filter(pk=spec.pk).update(
                active_alerts=sorted(active | {KUBECONFIG_ALERT}), last_reconciled_at=timezone.now())
    return PassReport(spec=spec.name, errors=[message], read_failed=True)


def _client_loads(spec: LaunchSpec, fenced: Callable[[], AbstractContextManager[None]]) -> None:
    """The cluster's kubeconfig loads again: its episode ends here, whatever the rest of the pass meets, so that
    the next failure to load is recorded again."""
    if KUBECONFIG_ALERT not in (spec.active_alerts or []):  # read with the spec at the start of this pass
        return
    with fenced():
        active = set(LaunchSpec.objects.filter(pk=spec.pk).values_list("active_alerts", flat=True).first() or [])
        LaunchSpec.objects.filter(pk=spec.pk).update(active_alerts=sorted(active - {KUBECONFIG_ALERT}))
    log.info("%s: the kubeconfig of cluster %s loads again", spec.name, spec.cluster.name,
             extra=log_fields(spec=spec.name))


@contextmanager
def holding(spec_id: int, *, wait_seconds: float = 0.0) -> Iterator[Lease | None]:
    """The spec's lease (pools/locks.py) for any holder: a worker's pass, `manage.py reconcile`, a manual
    reassign. After it is released, a rerun request left meanwhile by a pass that found the spec busy is
    taken and sent as a new pass: whoever held the lease, the change that request stands for is served now,
    not at the next beat tick."""
    held = False
    try:
        with spec_lease(spec_id, wait_seconds=wait_seconds) as lease:
            held = lease is not None
            yield lease
    finally:
        # Only a holder: a pass that found the spec busy must not send (and so re-send) the requests it leaves.
        if held and locks.take_rerun(spec_id):
            _enqueue(spec_id)


def ask_again(spec_id: int) -> None:
    """A pass found the spec busy: it leaves a rerun request for the holder. The holder may have released the
    lease (and looked for requests) just before the request was left: then nobody would take it, so look once
    more: a lease that is free now means the request is this caller's to send."""
    locks.ask_rerun(spec_id)
    if not locks.lease_taken(spec_id) and locks.take_rerun(spec_id):
        _enqueue(spec_id)


def _enqueue(spec_id: int) -> None:
    from .tasks import reconcile_spec as task

    try:
        task.delay(spec_id)
    except Exception as exc:  # the broker's errors have no common base worth naming; the beat's tick retries
        log.warning("launch spec %s: the rerun could not be enqueued (%s); the next beat tick runs it", spec_id, exc)


def reconcile_spec(
    spec_id: int, *, dry_run: bool = False, ec2: Ec2 | None = None, kube: Kube | None = None
) -> PassReport:
    spec = LaunchSpec.objects.select_related("cluster").get(pk=spec_id)
    # A dry run changes nothing outside, but it refreshes the snapshot: it waits its turn like a pass.
    with holding(spec.pk, wait_seconds=10 if dry_run else 0) as lease:
        if lease is None:
            report = PassReport(spec=spec.name, skipped="another worker is running this spec's pass")
        else:
            # Without Redis there is no lease to prove that this pass runs alone.
            report = run_pass(spec, ec2=ec2, kube=kube, dry_run=dry_run, exclusive=lease.redis_backed, lease=lease)
    if dry_run:
        return report
    if lease is None:
        ask_again(spec.pk)
    elif not (report.left or report.read_failed):
        # After the lease is let go: the spec's next pass (a new node) must not wait for these reads. A pass cut
        # short by its deadline is followed at once, so the facts wait for a later one. Never raises; at most
        # once per region every EIPDASH_REGION_FACTS_SECONDS, by the database's clock.
        refresh_region_facts(spec.cluster.region, ec2 or Ec2(spec.cluster.region))
    return report
