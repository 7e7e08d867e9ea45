"""Writes to the record. Every change of the history goes through here, whoever makes it (a worker, the web,
a command): how a claim opens, confirms and closes and how an event is written is decided in one place, so
that the database constraints behind I3 and the append-only history hold for every writer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import metrics
from .locks import spec_lock
from .logs import log_fields
from .models import SYSTEM_ACTOR, Assignment, Cluster, ElasticIP, Event, LaunchSpec, Node, ReassignRequest
from .regions import KNOWN_REGIONS
from .specfile import LaunchSpecInput, SpecFileError, cluster_name_problem, kube_context_problem


def default_region() -> str:
    return str(settings.EIPDASH_CLUSTER_REGION)


def cluster_default() -> Cluster:
    cluster, _ = Cluster.objects.get_or_create(
        name=settings.EIPDASH_CLUSTER_NAME,
        defaults={"region": default_region(), "kube_context": settings.EIPDASH_KUBE_CONTEXT},
    )
    return cluster


def _cluster_for(data: LaunchSpecInput) -> Cluster:
    """The spec's cluster. Only the configured default cluster is created on demand: a mistyped name
    would otherwise make a second row on the same kubeconfig, and two specs would fight over one node."""
    if data.cluster is None or data.cluster == settings.EIPDASH_CLUSTER_NAME:
        if not Cluster.objects.filter(name=settings.EIPDASH_CLUSTER_NAME).exists():
            # Made on demand, the default row must not land on a kube context another row already manages.
            other = Cluster.objects.filter(kube_context=settings.EIPDASH_KUBE_CONTEXT).first()
            if other is not None:
                raise SpecFileError(
                    [f"the default cluster {settings.EIPDASH_CLUSTER_NAME!r} would manage the same kube context "
                     f"as cluster {other.name!r}: name \"cluster\": \"{other.name}\" in the spec"]
                )
        cluster = cluster_default()
    else:
        found = Cluster.objects.filter(name=data.cluster).first()
        if found is None:
            known = ", ".join(sorted(Cluster.objects.values_list("name", flat=True))) or "none"
            raise SpecFileError(
                [f"unknown cluster {data.cluster!r} (known: {known}); an admin adds clusters in /admin/ "
                 "or with `manage.py cluster add`"]
            )
        cluster = found
    if data.region is not None and data.region != cluster.region:
        raise SpecFileError(
            [f"region {data.region!r} differs from cluster {cluster.name!r}'s region {cluster.region!r}"]
        )
    return cluster


class ClusterError(ValueError):
    """A refused cluster row: a bad field, or a kube context another row already uses."""


def cluster_problems(*, name: str, region: str, kube_context: str, exclude_pk: int | None = None) -> list[str]:
    """Why a cluster row may not be saved. Shared by the admin and `manage.py cluster add`.

    Two rows on one kube context are one cluster under two names: specs in each would claim the same nodes.
    """
    problems = [
        problem
        for problem in (cluster_name_problem(name), kube_context_problem(kube_context))
        if problem is not None
    ]
    if region not in KNOWN_REGIONS:
        problems.append(f"region {region!r} is not a known AWS region")
    others = Cluster.objects.filter(kube_context=kube_context)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    if (other := others.first()) is not None:
        where = f"kube context {kube_context!r}" if kube_context else "the current kube context"
        problems.append(f"cluster {other.name!r} already uses {where}: two rows would manage the same nodes")
    return problems


def cluster_create(*, name: str, region: str, kube_context: str = "") -> Cluster:
    with transaction.atomic():
        if Cluster.objects.filter(name=name).exists():
            raise ClusterError(f"cluster {name!r} exists")
        problems = cluster_problems(name=name, region=region, kube_context=kube_context)
        if problems:
            raise ClusterError("; ".join(problems))
        return Cluster.objects.create(name=name, region=region, kube_context=kube_context)


def launch_spec_apply(*, data: LaunchSpecInput) -> tuple[LaunchSpec, bool]:
    """Create or update a launch spec by name. All or nothing: a refused input changes no row.

    An update waits for the spec's running pass, so that no pass plans on half of an old selector.
    """
    existing = LaunchSpec.objects.filter(name=data.name).values_list("pk", flat=True).first()
    if existing is None:
        return _launch_spec_apply(data)
    with spec_lock(existing, wait_seconds=30) as acquired:
        if not acquired:
            raise SpecFileError([f"launch spec {data.name!r} is busy with a long pass; try again"])
        return _launch_spec_apply(data)


@transaction.atomic
def _launch_spec_apply(data: LaunchSpecInput) -> tuple[LaunchSpec, bool]:
    cluster = _cluster_for(data)
    spec, created = LaunchSpec.objects.select_for_update().get_or_create(
        name=data.name,
        defaults={
            "cluster": cluster,
            "labels": data.labels,
            "tag_key": data.tag_key,
            "tag_value": data.tag_value,
            "enabled": data.enabled,
        },
    )
    if not created:
        if spec.cluster_id != cluster.pk and spec.assignments.filter(closed_at__isnull=True).exists():
            raise SpecFileError([f"launch spec {spec.name!r} holds EIPs in cluster {spec.cluster.name!r}; "
                                 "release them before moving it to another cluster"])
        spec.cluster = cluster
        spec.labels = data.labels
        spec.tag_key = data.tag_key
        spec.tag_value = data.tag_value
        spec.enabled = data.enabled
        # The alerts were true of the old selector; the next pass works them out anew.
        spec.active_alerts = []
        spec.save()
    return spec, created


def launch_spec_delete(*, name: str) -> None:
    """Delete a spec. Refused while it holds EIPs: deleting would orphan live associations.

    Under the spec's lock: a pass that is opening a claim right now would otherwise slip past the check.
    """
    spec = LaunchSpec.objects.filter(name=name).first()
    if spec is None:
        raise LaunchSpec.DoesNotExist(f"no launch spec named {name!r}")
    with spec_lock(spec.pk, wait_seconds=30) as acquired:
        if not acquired:
            raise SpecFileError([f"launch spec {name!r} is busy with a long pass; try again"])
        _launch_spec_delete(spec)


@transaction.atomic
def _launch_spec_delete(spec: LaunchSpec) -> None:
    name = spec.name
    held = spec.assignments.filter(closed_at__isnull=True).count()
    if held:
        raise SpecFileError(
            [f"launch spec {name!r} still holds {held} EIP(s); disable it and let its nodes drain first"]
        )
    spec.delete()


@dataclass(frozen=True)
class EventContext:
    """Who and what an event is about; copied into the row as plain strings."""

    launch_spec: str = ""
    cluster: str = ""
    region: str = ""
    node: str = ""
    instance_id: str = ""
    public_ip: str = ""
    allocation_id: str = ""


def event_context(
    *, spec: LaunchSpec | None = None, node: Node | None = None, eip: ElasticIP | None = None
) -> EventContext:
    return EventContext(
        launch_spec=spec.name if spec else "",
        cluster=spec.cluster.name if spec else (node.cluster.name if node else ""),
        region=spec.cluster.region if spec else (eip.region if eip else ""),
        node=node.name if node else "",
        instance_id=node.instance_id if node else "",
        public_ip=eip.public_ip if eip else "",
        allocation_id=eip.allocation_id if eip else "",
    )


# Called with each recorded event once its transaction commits (the workers add a Kubernetes Event on the
# node there). Best effort: a hook that fails is logged and never fails the step that recorded the event.
EVENT_HOOKS: list[Callable[[Event], None]] = []
_log = logging.getLogger(__name__)


def _run_event_hooks(event: Event) -> None:
    for hook in EVENT_HOOKS:
        try:
            hook(event)
        except Exception:  # noqa: BLE001 - best effort by design, see EVENT_HOOKS
            _log.warning("event hook %s failed for event %s", getattr(hook, "__name__", hook), event.pk,
                         exc_info=True)


def event_record(
    *, kind: str, context: EventContext, reason: str, actor: str = SYSTEM_ACTOR, at: datetime | None = None
) -> Event:
    event = _event_create(kind=kind, context=context, reason=reason, actor=actor, at=at)
    metrics.EVENTS.labels(kind).inc()
    _log.info("%s: %s", kind, reason, extra=log_fields(
        spec=context.launch_spec, node=context.node, ip=context.public_ip, allocation_id=context.allocation_id))
    if EVENT_HOOKS:
        transaction.on_commit(lambda: _run_event_hooks(event))
    return event


def _event_create(
    *, kind: str, context: EventContext, reason: str, actor: str, at: datetime | None
) -> Event:
    return Event.objects.create(
        timestamp=at or timezone.now(),
        kind=kind,
        actor=actor,
        reason=reason,
        launch_spec=context.launch_spec,
        cluster=context.cluster,
        region=context.region,
        node=context.node,
        instance_id=context.instance_id,
        public_ip=context.public_ip,
        allocation_id=context.allocation_id,
    )


def assignment_open(
    *, eip: ElasticIP, node: Node, spec: LaunchSpec, actor: str, association_id: str = "",
    confirmed: bool = False,
) -> Assignment:
    """The claim. Raises IntegrityError when the EIP or the node already has an open assignment."""
    now = timezone.now()
    with transaction.atomic():
        return Assignment.objects.create(
            eip=eip,
            node=node,
            launch_spec=spec,
            eni_id=node.eni_id,
            private_ip=node.private_ip,
            association_id=association_id,
            opened_at=now,
            confirmed_at=now if confirmed else None,
            actor=actor,
        )


def assignment_confirm(*, assignment: Assignment, association_id: str) -> bool:
    """Mark a claim confirmed by AWS. False when it was closed meanwhile (someone else decided)."""
    updated = Assignment.objects.filter(pk=assignment.pk, closed_at__isnull=True).update(
        association_id=association_id, confirmed_at=timezone.now()
    )
    return updated == 1


def assignment_close(*, assignment: Assignment, reason: str, kind: str = "") -> bool:
    """Close an open assignment. False when it was already closed: the caller lost a race.

    kind (Assignment.CloseKind): why, for the free order; only a refusal by AWS demotes the EIP.
    """
    updated = Assignment.objects.filter(pk=assignment.pk, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason[:200], close_kind=kind
    )
    return updated == 1


# --- manual reassign requests ----------------------------------------------------------------------


def reassign_request_create(*, eip: ElasticIP, node_name: str, actor: str) -> ReassignRequest:
    """The operator's intent, recorded before anything moves; a worker carries it out."""
    return ReassignRequest.objects.create(eip=eip, node_name=node_name, actor=actor, created_at=timezone.now())


def reassign_request_start(*, request_id: int) -> bool:
    """Pending → running. False when it already ran (a task delivered twice moves nothing twice)."""
    updated = ReassignRequest.objects.filter(pk=request_id, state=ReassignRequest.State.PENDING).update(
        state=ReassignRequest.State.RUNNING, started_at=timezone.now()
    )
    return updated == 1


def reassign_request_finish(*, request_id: int, state: str, message: str) -> None:
    ReassignRequest.objects.filter(pk=request_id).exclude(
        state__in=[ReassignRequest.State.DONE, ReassignRequest.State.REFUSED, ReassignRequest.State.FAILED]
    ).update(state=state, message=message, finished_at=timezone.now())


def reassign_request_expire(*, started_before: datetime, created_before: datetime) -> int:
    """End the requests no worker can still be carrying out, so that no page polls them for ever: running
    since before `started_before` (its worker was killed or hit the hard time limit), or still pending since
    before `created_before` (a worker would refuse it as too old anyway)."""
    now = timezone.now()
    requests = ReassignRequest.objects
    stopped = requests.filter(state=ReassignRequest.State.RUNNING, started_at__lt=started_before).update(
        state=ReassignRequest.State.FAILED, finished_at=now,
        message="The worker stopped during the move (killed, or past its time limit). The next pass repairs the "
                "record from what AWS shows; the EIP's history says where it is.",
    )
    unclaimed = requests.filter(state=ReassignRequest.State.PENDING, created_at__lt=created_before).update(
        state=ReassignRequest.State.REFUSED, finished_at=now,
        message="No worker picked this request up in time; nothing was changed. Look at the EIP again and ask anew.",
    )
    return stopped + unclaimed
