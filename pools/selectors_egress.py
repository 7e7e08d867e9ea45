"""Reads for a spec's allowlist and its nodes' egress: the API's egress-ips, the spec page's Capacity section and
the node page. Each is a fixed number of queries, whatever the size of the pool or the number of nodes."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef

from . import allowlist
from .egress import VIA_UNKNOWN, Egress, egress_of
from .models import Assignment, ElasticIP, LaunchSpec, Node
from .pool_rule import pool_filter
from .selectors import ENDED_NODE_STATES
from .snapshot import egress_map


def allowlist_of(spec: LaunchSpec) -> allowlist.Allowlist:
    """Every EIP of the spec's pool that AWS still lists, in use or free: snapshot.pool_rows' rows (the pool rule
    on the rows not gone), read as tuples in one query (the spec page reads it on every refresh)."""
    claimed = Exists(Assignment.objects.filter(eip=OuterRef("pk"), closed_at__isnull=True))
    rows = (pool_filter(ElasticIP.objects.filter(gone=False), spec).order_by()
            .annotate(claimed=claimed)
            .values_list("public_ip", "allocation_id", "association_id", "claimed", "last_seen_at"))
    return allowlist.build(spec.name, rows)


def bypasses_eip(egress: Egress) -> bool:
    """The node's traffic is known to leave by another way than its EIP (a NAT gateway, or no route out). An
    egress not read yet (or a subnet the read did not cover) is not known to: never a warning on a guess."""
    return egress.via != VIA_UNKNOWN and not egress.uses_eip


@dataclass(frozen=True)
class NodeEgress:
    cluster: str
    name: str
    egress: Egress


def nodes_bypassing_eip(spec: LaunchSpec) -> list[NodeEgress]:
    """The spec's live nodes (as the capacity report's egress counts them: listed, neither released nor gone)
    whose egress does not use their EIP, by name: two queries (the region's egress map, the nodes' subnets), none
    per node."""
    by_subnet = egress_map(spec.cluster.region)
    rows = (Node.objects.filter(launch_spec=spec, deleted_at__isnull=True).exclude(state__in=ENDED_NODE_STATES)
            .order_by("name").values_list("name", "subnet_id"))
    cluster = spec.cluster.name
    found = []
    for name, subnet_id in rows:
        egress = egress_of(by_subnet, subnet_id)
        if bypasses_eip(egress):
            found.append(NodeEgress(cluster, name, egress))
    return found


def node_egress(node: Node) -> Egress:
    """Where the node's traffic leaves, from its subnet and its region's last read of the route tables."""
    return egress_of(egress_map(node.cluster.region), node.subnet_id)
