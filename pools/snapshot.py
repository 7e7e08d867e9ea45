"""Planner inputs from the record.

The workers first write what AWS and Kubernetes said into the snapshot tables, then plan from here and store the
plan (services.spec_plan_store) that the spec page, the node page and the API read; `reconcile --dry-run` plans
from the same rows. One path, so they cannot disagree.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import reduce
from typing import Any, Protocol

from django.conf import settings
from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, Max, Q, Value
from django.db.models.functions import Now

from .egress import egress_of
from .models import Assignment, ElasticIP, LaunchSpec, Node, RegionFacts
from .planner import Claim, EipView, NodeView, SpecView
from .pool_rule import labels_match, pool_filter, specs_selecting
from .vocabulary import GONE_STATE


def spec_view(spec: LaunchSpec) -> SpecView:
    return SpecView(
        name=spec.name, tag_key=spec.tag_key, tag_value=spec.tag_value, active_alerts=frozenset(spec.active_alerts),
        enabled=spec.enabled, min_free=spec.min_free,
    )


def egress_map(region: str) -> dict[str, Any]:
    """Subnet id -> where its egress leaves, as the region's last read of its route tables said (RegionFacts)."""
    found = RegionFacts.objects.filter(region=region).values_list("egress", flat=True).first()
    return dict(found or {})


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
    spec: LaunchSpec, *, pool: Sequence[PoolEntry] | None = None, fence: int = 0, exclusive: bool = True,
    now: datetime | None = None,
) -> tuple[SpecView, list[EipView], list[NodeView], dict[str, Claim]]:
    """pool: what DescribeAddresses said in this pass; None: the pool as the snapshot holds it (tests, a seed).

    fence: the pass's fencing number (pools/locks.py). An unconfirmed claim of an earlier holder (a lower
    number) may still have its AssociateAddress on the way: it is in flight until EIPDASH_LEASE_SECONDS after
    `Assignment.stale_since` (that holder's last renewal of its lease, or when a newer holder first saw the
    claim if that is lost: services.claims_seen_stale), on the clock it was stamped with: `now`, Redis's (the
    leases' own, shared by every worker whatever its host's clock says), else the database's.
    exclusive: False when the pass cannot prove it runs alone (no Redis): a recent unconfirmed claim may then
    be another process's call in flight, for as long as that process may still run.
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

    # Tuples, not model instances: every pass plans, and building a few hundred Assignment, ElasticIP and Node
    # instances was most of the planning's time.
    open_claims = list(
        Assignment.objects.filter(closed_at__isnull=True, launch_spec=spec)
        .annotate(in_flight=in_flight_claim(fence=fence, exclusive=exclusive, now=now))
        .values_list("eip__allocation_id", "node__name", "node_id", "confirmed_at", "in_flight", "eni_id",
                     "private_ip")
    )
    claims = {
        allocation_id: Claim(
            node=node_name,
            confirmed=confirmed_at is not None,
            in_flight=bool(in_flight),
            eni_id=eni_id or None,
            private_ip=private_ip or None,
        )
        for allocation_id, node_name, _node_id, confirmed_at, in_flight, eni_id, private_ip in open_claims
    }
    claimed_node_ids = {node_id for _a, _n, node_id, *_rest in open_claims}

    # The spec's nodes, plus every node tied to the pool: an open claim, or a pool EIP on its ENI.
    node_rows = Node.objects.filter(cluster=spec.cluster).filter(
        Q(pk__in=claimed_node_ids)
        | Q(launch_spec=spec, deleted_at__isnull=True)
        | Q(eni_id__in=[e.eni_id for e in eips if e.eni_id])
    )
    # Only the columns the planner reads, as tuples (see above); the id keeps DISTINCT per row as before.
    by_subnet = egress_map(spec.cluster.region)
    nodes = [node_view(dict(zip(NODE_COLUMNS, row, strict=True)), spec, same_cluster, by_subnet)
             for row in node_rows.distinct().order_by("name").values_list(*NODE_COLUMNS)]
    return spec_view(spec), eips, nodes, claims


def in_flight_claim(*, fence: int, exclusive: bool, now: datetime | None = None) -> ExpressionWrapper | Value:
    """Whether an open claim may still have its AssociateAddress on the way: unconfirmed, and opened by an
    earlier holder that a newer one first saw less than a lease ago (on Redis's clock `now`, else the
    database's: never a host's); or, for a pass that cannot prove it runs alone, opened less than a pass's
    time ago."""
    def since(seconds: float) -> ExpressionWrapper | datetime:
        if now is not None:
            return now - timedelta(seconds=seconds)
        return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())

    conditions = []
    if fence:
        conditions.append(Q(fence__lt=fence) & (Q(stale_since__isnull=True)
                                                | Q(stale_since__gt=since(settings.EIPDASH_LEASE_SECONDS))))
    if not exclusive:
        conditions.append(Q(opened_at__gt=since(settings.EIPDASH_SPEC_LOCK_SECONDS)))
    if not conditions:
        return Value(False)
    return ExpressionWrapper(Q(confirmed_at__isnull=True) & reduce(operator.or_, conditions),
                             output_field=BooleanField())


NODE_COLUMNS = ("id", "name", "instance_id", "instance_state", "eni_id", "private_ip", "startup_tainted", "draining",
                "drain_reason", "workload_pods", "foreign_eip", "deleted_at", "labels", "eip_label", "first_seen_at",
                "subnet_id")


def node_view(row: Mapping[str, Any], spec: LaunchSpec, same_cluster: Sequence[LaunchSpec],
              by_subnet: Mapping[str, Any] | None = None) -> NodeView:
    """A Node row (its NODE_COLUMNS) as the planner sees it: one mapping for the passes, the node page and the
    manual reassign, so that they judge a node by the same rules. by_subnet: the region's egress map (egress_map)."""
    egress = egress_of(by_subnet or {}, row["subnet_id"])
    return NodeView(
        name=row["name"],
        instance_id=row["instance_id"],
        instance_state=row["instance_state"] or GONE_STATE,
        eni_id=row["eni_id"] or None,
        private_ip=row["private_ip"] or None,
        startup_tainted=row["startup_tainted"],
        draining=row["draining"],
        drain_reason=row["drain_reason"],
        workload_pods=row["workload_pods"],
        foreign_eip=row["foreign_eip"],
        in_cluster=row["deleted_at"] is None,
        matches_spec=labels_match(spec.labels, row["labels"]),
        also_matched_by=tuple(s.name for s in same_cluster if labels_match(s.labels, row["labels"])),
        eip_label=row["eip_label"],
        first_seen_at=row["first_seen_at"],
        egress_via=egress.via,
        egress_text=egress.text(),
    )


def node_view_of(node: Node, spec: LaunchSpec) -> NodeView:
    """One node row, with its neighbours in the cluster, as the planner sees it."""
    same_cluster = [s for s in neighbour_specs(spec) if s.cluster_id == spec.cluster_id]
    return node_view({column: getattr(node, column) for column in NODE_COLUMNS}, spec, same_cluster,
                     egress_map(spec.cluster.region))
