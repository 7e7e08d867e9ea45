"""Planner inputs from the record.

The workers first write what AWS and Kubernetes said into the snapshot tables, then plan from here;
the dashboard's plan preview plans from the same rows. One path, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from django.db.models import Max, Q

from .models import Assignment, ElasticIP, LaunchSpec, Node
from .planner import Claim, EipView, NodeView, Plan, SpecView, plan
from .pool_rule import labels_match, pool_filter, specs_selecting


def spec_view(spec: LaunchSpec) -> SpecView:
    return SpecView(
        name=spec.name, tag_key=spec.tag_key, tag_value=spec.tag_value, active_alerts=frozenset(spec.active_alerts),
        enabled=spec.enabled,
    )


def neighbour_specs(spec: LaunchSpec) -> list[LaunchSpec]:
    """The other enabled specs of the region: an EIP or a node they also select is contested."""
    return list(
        LaunchSpec.objects.filter(enabled=True, cluster__region=spec.cluster.region)
        .exclude(pk=spec.pk)
        .select_related("cluster")
    )


def pool_rows(spec: LaunchSpec) -> list[ElasticIP]:
    return list(pool_filter(ElasticIP.objects.filter(gone=False), spec))


class PoolEntry(Protocol):
    """One EIP of the pool: an ElasticIP row, or the adapter's Address of this very pass."""

    @property
    def allocation_id(self) -> str: ...
    @property
    def public_ip(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def association_id(self) -> str | None: ...
    @property
    def eni_id(self) -> str | None: ...
    @property
    def private_ip(self) -> str | None: ...
    @property
    def instance_id(self) -> str | None: ...


def planner_inputs(
    spec: LaunchSpec, *, pool: Sequence[PoolEntry] | None = None, in_flight_since: datetime | None = None
) -> tuple[SpecView, list[EipView], list[NodeView], dict[str, Claim]]:
    """pool: what DescribeAddresses said in this pass; None for the preview, which reads the snapshot.

    in_flight_since: unconfirmed claims opened after this moment may still be in another process's
    hands (None: the caller holds the spec's lock, so no other pass is running).
    """
    neighbours = neighbour_specs(spec)
    same_cluster = [s for s in neighbours if s.cluster_id == spec.cluster_id]
    entries: Sequence[PoolEntry] = pool if pool is not None else list(pool_rows(spec))

    closed = Assignment.objects.filter(
        launch_spec=spec, eip__allocation_id__in=[e.allocation_id for e in entries], closed_at__isnull=False
    ).values_list("eip__allocation_id")
    # A confirmed assignment that ended is a release. Only a claim that AWS refused demotes the EIP: a
    # throttle, a timeout or an interrupted pass says nothing about the EIP itself.
    last_released = dict(closed.filter(confirmed_at__isnull=False).annotate(last=Max("closed_at")))
    refused = closed.filter(confirmed_at__isnull=True, close_kind=Assignment.CloseKind.REFUSED)
    last_refused = dict(refused.annotate(last=Max("closed_at")))
    eips = [
        EipView(
            allocation_id=entry.allocation_id,
            public_ip=entry.public_ip,
            association_id=entry.association_id or None,
            eni_id=entry.eni_id or None,
            private_ip=entry.private_ip or None,
            instance_id=entry.instance_id or None,
            last_released_at=last_released.get(entry.allocation_id),
            last_refused_at=last_refused.get(entry.allocation_id),
            also_selected_by=tuple(s.name for s in specs_selecting(entry.tags, neighbours)),
        )
        for entry in entries
    ]

    # Tuples, not model instances: the spec page polls this preview, and building a few hundred
    # Assignment, ElasticIP and Node instances was most of its time.
    open_claims = list(
        Assignment.objects.filter(closed_at__isnull=True, launch_spec=spec).values_list(
            "eip__allocation_id", "node__name", "node_id", "confirmed_at", "opened_at", "eni_id", "private_ip"
        )
    )
    claims = {
        allocation_id: Claim(
            node=node_name,
            confirmed=confirmed_at is not None,
            in_flight=confirmed_at is None and in_flight_since is not None and opened_at > in_flight_since,
            eni_id=eni_id or None,
            private_ip=private_ip or None,
        )
        for allocation_id, node_name, _node_id, confirmed_at, opened_at, eni_id, private_ip in open_claims
    }
    claimed_node_ids = {node_id for _a, _n, node_id, *_rest in open_claims}

    # The spec's nodes, plus every node tied to the pool: an open claim, or a pool EIP on its ENI.
    node_rows = Node.objects.filter(cluster=spec.cluster).filter(
        Q(pk__in=claimed_node_ids)
        | Q(launch_spec=spec, deleted_at__isnull=True)
        | Q(eni_id__in=[e.eni_id for e in eips if e.eni_id])
    )
    # Only the columns the planner reads, as tuples (see above); the id keeps DISTINCT per row as before.
    columns = ("id", "name", "instance_id", "instance_state", "eni_id", "private_ip", "startup_tainted", "draining",
               "drain_reason", "workload_pods", "foreign_eip", "deleted_at", "labels", "eip_label", "first_seen_at")
    nodes = [
        NodeView(
            name=name,
            instance_id=instance_id,
            instance_state=instance_state or "gone",
            eni_id=eni_id or None,
            private_ip=private_ip or None,
            startup_tainted=startup_tainted,
            draining=draining,
            drain_reason=drain_reason,
            workload_pods=workload_pods,
            foreign_eip=foreign_eip,
            in_cluster=deleted_at is None,
            matches_spec=labels_match(spec.labels, labels),
            also_matched_by=tuple(s.name for s in same_cluster if labels_match(s.labels, labels)),
            eip_label=eip_label,
            first_seen_at=first_seen_at,
        )
        for (_id, name, instance_id, instance_state, eni_id, private_ip, startup_tainted, draining, drain_reason,
             workload_pods, foreign_eip, deleted_at, labels, eip_label, first_seen_at)
        in node_rows.distinct().order_by("name").values_list(*columns)
    ]  # fmt: skip
    return spec_view(spec), eips, nodes, claims


def preview_plan(*, spec: LaunchSpec) -> Plan:
    """The plan of the next pass, from the last snapshot. Reads only the database."""
    return plan(*planner_inputs(spec))
