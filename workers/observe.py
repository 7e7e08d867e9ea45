"""Observing the world: the write half of the snapshot.

A pass reads AWS and Kubernetes here and writes what they said into the ElasticIP and Node rows; the read
half, which turns those rows into the planner's inputs, is pools/snapshot.py. The two halves are split by
package only because pools/ must not import the AWS and Kubernetes adapters: the web runs without them.

A read that fails ends the pass before anything is written outside, and is recorded once per episode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from pools import services
from pools.keys import EIP_LABEL
from pools.logs import log_fields
from pools.models import Assignment, ElasticIP, Event, LaunchSpec, Node
from pools.pool_rule import selects

from .ec2 import Address, Ec2, Ec2Error
from .kube import Kube, KubeError
from .kube import NotFound as KubeNotFound

log = logging.getLogger(__name__)
# The alert key of a pass that could not read AWS or Kubernetes: one `error` event per episode.
READ_ALERT = "read-failed"


def refresh_snapshot(spec: LaunchSpec, ec2: Ec2, kube: Kube, *, read_errors: list[str] | None = None) -> list[Address]:
    """Write what AWS and Kubernetes say now into ElasticIP and Node rows; return this pass's pool.

    The planner takes the pool from the returned list, not from the ElasticIP rows: another spec's pass
    in the same region rewrites those rows under its own lock, possibly with an older observation.

    read_errors: when given, a node whose pods cannot be listed (a 403, a timeout) is recorded there with
    an unknown pod count, which keeps its EIP, and the rest of the pass goes on. Without it, that raises.
    """
    now = timezone.now()
    cluster = spec.cluster
    region = cluster.region
    region_specs = list(LaunchSpec.objects.filter(cluster__region=region))
    # One DescribeAddresses for the region, unfiltered: it covers every spec's tag key, and it shows the
    # non-pool EIPs that already sit on a node (associating over them would knock them off).
    addresses = ec2.list_all_addresses()
    selected = [a for a in addresses if any(selects(s, a.tags) for s in region_specs)]
    _save_addresses(region, selected, now)
    pool = [a for a in addresses if selects(spec, a.tags)]

    pool_on = {(a.eni_id, a.private_ip) for a in pool if a.eni_id}
    others_on = {(a.eni_id, a.private_ip) for a in addresses
                 if a.eni_id and not selects(spec, a.tags)}

    listed = {n.name: n for n in kube.list_nodes(spec.labels) if n.instance_id}
    matching = set(listed)
    # Nodes tied to the pool although their labels do not (or no longer) match: an open claim, or a pool
    # EIP on their ENI. They must be followed until they give the EIP back.
    tied = set(
        Assignment.objects.filter(closed_at__isnull=True, launch_spec=spec).values_list("node__name", flat=True)
    ) | set(
        Node.objects.filter(cluster=cluster, eni_id__in={eni for eni, _ in pool_on}).values_list("name", flat=True)
    )
    for name in sorted(tied - listed.keys()):
        try:
            found = kube.get_node(name)
        except KubeNotFound:
            continue
        if found.instance_id:
            listed[name] = found

    known = {row.name: row for row in Node.objects.filter(cluster=cluster, name__in=listed.keys() | tied)}
    instance_ids = {n.instance_id for n in listed.values() if n.instance_id} | {
        known[name].instance_id for name in tied if name in known
    }
    instances = ec2.describe_instances(instance_ids)

    def pods_on(name: str) -> int | None:
        try:
            return kube.workload_pod_count(name)
        except KubeError as exc:
            if read_errors is None:
                raise
            read_errors.append(f"list the pods of {name}: {type(exc).__name__}: {exc}")
            return None  # not counted: the node keeps its EIP (I2)

    rows: dict[bool, list[Node]] = {True: [], False: []}
    fields: list[str] = []
    for name, kn in listed.items():
        instance = instances.get(kn.instance_id or "")
        previous = known.get(name)
        # DescribeInstances may not show a new instance's ENI yet. The last known ENI is only a fallback
        # for the same instance: a reused node name (EKS ip-… names) must never inherit the ENI and
        # private IP of the instance that had the name before.
        fallback = previous if previous is not None and previous.instance_id == kn.instance_id else None
        eni_id = instance.eni_id if instance and instance.eni_id else (fallback.eni_id if fallback else "")
        private_ip = instance.private_ip if instance and instance.private_ip else (
            fallback.private_ip if fallback else "")
        holds = (eni_id, private_ip) in pool_on or name in tied
        # Every column this pass observes: the same mapping builds the new row and names the columns an
        # existing row gets updated, so that a column added here can never be left stale.
        observed = dict(
            instance_id=kn.instance_id or "",
            az=kn.az,
            labels=kn.labels,
            # The node is still there but EC2 does not list its instance (eventual consistency right after
            # a launch): unknown, which neither gets an EIP nor gives one back.
            instance_state=instance.state if instance else "unknown",
            eni_id=eni_id or "",
            private_ip=private_ip or "",
            startup_tainted=kn.has_taint(settings.EIPDASH_STARTUP_TAINT),
            draining=kn.draining,
            drain_reason=kn.drain_reason,
            foreign_eip=(eni_id, private_ip) in others_on,
            eip_label=kn.labels.get(EIP_LABEL, ""),
            # Pods are counted only where the answer decides something: a draining node holding an EIP.
            workload_pods=pods_on(name) if kn.draining and holds else None,
            last_seen_at=now,
            deleted_at=None,
        )
        fields = list(observed)
        rows[name in matching].append(Node(cluster=cluster, name=name, launch_spec=spec, first_seen_at=now,
                                           **observed))
    # A tied node keeps the launch spec it belongs to by its labels; only matching nodes join this one.
    for is_matching, batch in rows.items():
        if batch:
            Node.objects.bulk_create(batch, update_conflicts=True, unique_fields=["cluster", "name"],
                                     update_fields=fields + (["launch_spec"] if is_matching else []))
    # A name that came back on another instance (EKS ip-… names are reused) is a new node.
    reborn = [name for name, kn in listed.items() if name in known and known[name].instance_id != kn.instance_id]
    if reborn:
        Node.objects.filter(cluster=cluster, name__in=reborn).update(first_seen_at=now, eip_ready_at=None)
    # Nodes that Kubernetes no longer lists: deleted (their instance state still matters).
    gone = Node.objects.filter(cluster=cluster, deleted_at__isnull=True).filter(
        Q(launch_spec=spec) | Q(name__in=tied)
    ).exclude(name__in=listed.keys())
    for row in gone:
        row.deleted_at = now
        instance = instances.get(row.instance_id)
        row.instance_state = instance.state if instance else "gone"
        row.save(update_fields=["deleted_at", "instance_state"])
    for name in tied - listed.keys():
        deleted = known.get(name)
        if deleted is not None and deleted.deleted_at is not None:
            instance = instances.get(deleted.instance_id)
            Node.objects.filter(pk=deleted.pk).update(instance_state=instance.state if instance else "gone")
    return pool


def _address_observed(region: str, a: Address, now: datetime) -> dict[str, object]:
    """Every ElasticIP column a pass observes: it builds the new row and names the columns an existing
    row gets updated, so that a column added here can never be left stale."""
    return dict(
        region=region,
        public_ip=a.public_ip,
        tags=a.tags,
        association_id=a.association_id or "",
        instance_id=a.instance_id or "",
        eni_id=a.eni_id or "",
        private_ip=a.private_ip or "",
        last_seen_at=now,
        gone=False,
    )


def _save_addresses(region: str, selected: list[Address], now: datetime) -> None:
    observed = {a.allocation_id: _address_observed(region, a, now) for a in selected}
    if observed:
        ElasticIP.objects.bulk_create(
            [ElasticIP(allocation_id=allocation_id, **columns) for allocation_id, columns in observed.items()],
            update_conflicts=True,
            unique_fields=["allocation_id"],
            update_fields=list(next(iter(observed.values()))),
        )
    ElasticIP.objects.filter(region=region, gone=False).exclude(
        allocation_id__in=[a.allocation_id for a in selected]
    ).update(gone=True)


def error_text(what: str, exc: Exception) -> str:
    code = getattr(exc, "code", "")
    return f"{what}: {type(exc).__name__}{f' ({code})' if code else ''}: {exc}"


@dataclass
class Observation:
    """What refresh_snapshot gave a pass: the pool, or None when AWS or Kubernetes could not be read."""

    pool: list[Address] | None
    read_errors: list[str]


def observe(spec: LaunchSpec, ec2: Ec2, kube: Kube, *, record: bool = True) -> Observation:
    """refresh_snapshot for a pass. A read that fails (UnauthorizedOperation, throttling, a 403 on nodes)
    ends the pass; it is recorded as one `error` event per episode (like pool_exhausted), the pass time
    is kept in last_reconciled_at, and last_successful_pass_at stays where it was."""
    read_errors: list[str] = []
    try:
        pool = refresh_snapshot(spec, ec2, kube, read_errors=read_errors)
    except (Ec2Error, KubeError) as exc:
        read_errors.append(error_text("read AWS and Kubernetes", exc))
        log.warning("%s: %s", spec.name, read_errors[-1], extra=log_fields(spec=spec.name))
        if record:
            _record_read_failure(spec, read_errors, pass_ended=True)
        return Observation(None, read_errors)
    if read_errors and record:
        _record_read_failure(spec, read_errors, pass_ended=False)
    return Observation(pool, read_errors)


def _record_read_failure(spec: LaunchSpec, read_errors: list[str], *, pass_ended: bool) -> None:
    active = set(LaunchSpec.objects.filter(pk=spec.pk).values_list("active_alerts", flat=True).first() or [])
    if READ_ALERT not in active:
        services.event_record(kind=Event.Kind.ERROR, context=services.event_context(spec=spec),
                              reason="; ".join(read_errors)[:2000])
    if pass_ended:
        # The other alerts stay as the last pass that could read left them: nothing is known anew.
        LaunchSpec.objects.filter(pk=spec.pk).update(
            active_alerts=sorted(active | {READ_ALERT}), last_reconciled_at=timezone.now()
        )

