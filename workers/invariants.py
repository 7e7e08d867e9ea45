"""The promise as a check: compare AWS, Kubernetes and the record against the invariants I1–I4.

- I1: a schedulable node of an enabled spec (no startup taint, not cordoned, no NoSchedule/NoExecute taint,
  not being deleted, its instance pending/running) holds a pool EIP on its primary ENI's primary private IP.
- I2: no pool EIP is pulled from a node while it still runs workload pods (an operator's reassign excepted).
  At one instant: a live node that takes no new pods (draining or tainted), runs workload pods, holds no
  pool EIP, and had one released from this very instance (a `released` event) lost it while busy. The
  fault campaign also checks I2 over time, from the release events and the life of every pod it ran.
- I3: no EIP on two nodes, no node with two pool EIPs (two pool EIPs on one node's primary ENI).
- I4: every open assignment matches AWS, every pool EIP AWS shows on a node of a spec has its open record,
  no pool EIP stays on a gone node or a dead instance, and the `eipdash.io/eip` label tells the truth.
  These may legitimately be false for the length of one pass, so an I4 finding only counts once it has
  persisted across consecutive observations spanning the grace period (:class:`Checker`).

Reads only, and only through the adapters (``workers.ec2``, ``workers.kube``) and the ORM.

Reading order matters, because the world moves while it is read: Kubernetes first, then AWS, then the
record, then Kubernetes again. A node counts for I1 only if it was schedulable and unchanged (same
resourceVersion) in both Kubernetes readings: it was then schedulable during the whole AWS reading, so an
EIP missing from that reading was really missing while the node could take pods.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q

from pools.keys import EIP_LABEL
from pools.models import Assignment, Cluster, Event, LaunchSpec, Node
from pools.planner import LIVE_STATES
from pools.pool_rule import labels_match, selects

from .ec2 import Address, Ec2, Instance
from .kube import Kube, KubeNode, kube_for

DEAD_STATES = frozenset({"shutting-down", "terminated"})
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
# Findings that may be true for the length of one pass (the record catching up with AWS): they need grace.
GRACED = frozenset({"I4"})


@dataclass(frozen=True)
class Violation:
    invariant: str  # I1 | I2 | I3 | I4
    key: str  # the same finding keeps the same key from one observation to the next
    message: str

    def line(self) -> str:
        return f"{self.invariant} {self.message}"


@dataclass
class Observation:
    """One reading of the world and what it breaks (I4 findings not yet graced)."""

    violations: list[Violation] = field(default_factory=list)
    # spec name -> nodes of the spec that wait for an EIP (live, not draining, no pool EIP)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    # spec name -> pool EIPs of the spec that AWS shows free
    free: dict[str, list[str]] = field(default_factory=dict)
    nodes: int = 0
    addresses: int = 0


def schedulable(node: KubeNode, startup_taint: str) -> bool:
    """Whether the scheduler may place an ordinary (non-tolerating) pod on the node."""
    if node.unschedulable or node.deleting:
        return False
    return not any(t.get("key") == startup_taint or t.get("effect") in BLOCKING_EFFECTS for t in node.taints)


def _ec2_default(region: str) -> Ec2:
    return Ec2(region)


def _kube_default(cluster: Cluster) -> Kube:
    return kube_for(cluster)


@dataclass
class _NodeFacts:
    """A listed node of a cluster, with its instance and the specs whose labels it carries."""

    node: KubeNode
    cluster: Cluster
    instance: Instance | None
    specs: list[LaunchSpec]
    stable: bool  # schedulable and unchanged across both Kubernetes readings


def observe(
    *,
    ec2_for: Callable[[str], Ec2] = _ec2_default,
    kube_for: Callable[[Cluster], Kube] = _kube_default,
) -> Observation:
    """Read AWS, Kubernetes and the record once and list what breaks I1–I4 (I4 ungraced)."""
    startup_taint = settings.EIPDASH_STARTUP_TAINT
    specs = list(LaunchSpec.objects.select_related("cluster"))
    clusters = {spec.cluster_id: spec.cluster for spec in specs}
    kubes = {pk: kube_for(cluster) for pk, cluster in clusters.items()}
    regions = sorted({cluster.region for cluster in clusters.values()})
    ec2s = {region: ec2_for(region) for region in regions}

    first = {pk: {n.name: n for n in kube.list_all_nodes()} for pk, kube in kubes.items()}
    addresses = {region: ec2.list_all_addresses() for region, ec2 in ec2s.items()}
    open_claims = list(
        Assignment.objects.filter(closed_at__isnull=True).select_related("eip", "node", "node__cluster", "launch_spec")
    )
    pool: dict[str, Address] = {}  # allocation id -> address, for every EIP some spec of its region selects
    for region, found in addresses.items():
        region_specs = [s for s in specs if s.cluster.region == region]
        for address in found:
            if any(selects(s, address.tags) for s in region_specs):
                pool[address.allocation_id] = address
    held_enis = {a.eni_id for a in pool.values() if a.eni_id}
    # Nodes of the record that may still hold a pool EIP, or an open claim, although Kubernetes no longer
    # lists them: their instances are described too, to tell a dead instance from a live one.
    recorded = list(Node.objects.filter(Q(eni_id__in=held_enis) | Q(pk__in=[c.node_id for c in open_claims]))
                    .exclude(eni_id="", instance_id="").select_related("cluster"))
    wanted: dict[str, set[str]] = defaultdict(set)
    for pk, listed in first.items():
        wanted[clusters[pk].region].update(n.instance_id for n in listed.values() if n.instance_id)
    for row in recorded:
        if row.instance_id:
            wanted[row.cluster.region].add(row.instance_id)
    instances = {region: ec2s[region].describe_instances(wanted.get(region, set())) for region in regions}
    second = {pk: {n.name: n for n in kube.list_all_nodes()} for pk, kube in kubes.items()}

    observation = Observation(nodes=sum(len(listed) for listed in second.values()), addresses=len(pool))
    out = observation.violations

    # The nodes Kubernetes lists in both readings, with their instances and their specs.
    facts: list[_NodeFacts] = []
    for pk, listed in second.items():
        cluster = clusters[pk]
        for name, node in listed.items():
            before = first[pk].get(name)
            instance = instances[cluster.region].get(node.instance_id) if node.instance_id else None
            own_specs = [s for s in specs if s.cluster_id == pk and labels_match(s.labels, node.labels)]
            stable = (before is not None and before.resource_version == node.resource_version
                      and schedulable(node, startup_taint))
            facts.append(_NodeFacts(node, cluster, instance, own_specs, stable))

    # Which node (or recorded node) each primary ENI belongs to.
    by_eni: dict[str, _NodeFacts] = {f.instance.eni_id: f for f in facts if f.instance and f.instance.eni_id}
    by_name: dict[tuple[int, str], _NodeFacts] = {(f.cluster.pk, f.node.name): f for f in facts}
    pool_on: dict[str, list[Address]] = defaultdict(list)
    for address in pool.values():
        if address.eni_id:
            pool_on[address.eni_id].append(address)

    # --- I3: two pool EIPs on one node (AWS itself never puts one EIP on two ENIs).
    for eni_id, on_eni in sorted(pool_on.items()):
        if len(on_eni) > 1:
            owner = by_eni.get(eni_id)
            where = f"node {owner.node.name}" if owner else f"ENI {eni_id}"
            ips = ", ".join(sorted(a.public_ip for a in on_eni))
            out.append(Violation("I3", f"I3:two:{eni_id}", f"{where} holds {len(on_eni)} pool EIPs: {ips}"))
    labelled: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        if f.specs and f.node.labels.get(EIP_LABEL) and f.instance and f.instance.state in LIVE_STATES:
            labelled[f.node.labels[EIP_LABEL]].append(f.node.name)
    claims_by_eip: dict[str, list[Assignment]] = defaultdict(list)
    claims_by_node: dict[int, list[Assignment]] = defaultdict(list)
    for claim in open_claims:
        claims_by_eip[claim.eip.allocation_id].append(claim)
        claims_by_node[claim.node_id].append(claim)
    for allocation_id, claims in sorted(claims_by_eip.items()):
        if len(claims) > 1:
            names = ", ".join(sorted(c.node.name for c in claims))
            out.append(Violation("I3", f"I3:record:{allocation_id}",
                                 f"the record has {claims[0].eip.public_ip} open on {len(claims)} nodes: {names}"))
    for claims in claims_by_node.values():
        if len(claims) > 1:
            ips = ", ".join(sorted(c.eip.public_ip for c in claims))
            out.append(Violation("I3", f"I3:record-node:{claims[0].node_id}",
                                 f"the record has node {claims[0].node.name} holding {len(claims)} EIPs: {ips}"))

    # --- I1 and I2, node by node; and who waits while an EIP is free (the campaign's latency figure).
    for f in facts:
        instance, node = f.instance, f.node
        if not f.specs or node.instance_id is None:
            continue
        live = instance is not None and instance.state in LIVE_STATES
        own = [a for a in pool_on.get(instance.eni_id or "", []) if a.private_ip == instance.private_ip] if (
            instance is not None) else []
        enabled = [s for s in f.specs if s.enabled]
        if live and not own and enabled and not node.draining:
            for spec in enabled:
                observation.waiting.setdefault(spec.name, []).append(node.name)
        if enabled and f.stable and live and not own:
            assert instance is not None
            if not instance.eni_id or not instance.private_ip:
                why = "its instance has no primary private IPv4"
            elif any(a.eni_id == instance.eni_id for a in pool.values()):
                why = "a pool EIP sits on another private IP of its primary ENI"
            elif any(a.eni_id == instance.eni_id and a.private_ip == instance.private_ip
                     for a in addresses[f.cluster.region]):
                why = "a non-pool EIP sits on its primary IP"
            else:
                why = "no EIP on its primary IP"
            out.append(Violation("I1", f"I1:{f.cluster.name}:{node.name}:{node.instance_id}",
                                 f"node {node.name} ({node.instance_id}) is schedulable without a pool EIP: {why}"))
        # A schedulable node without its EIP is I1's case (pods may have come after the release); I2 is the
        # node that cannot take new pods, so its workload pods were there before its EIP went.
        if live and not own and not schedulable(node, startup_taint):
            released = Event.objects.filter(kind=Event.Kind.RELEASED, cluster=f.cluster.name, node=node.name,
                                            instance_id=node.instance_id).order_by("-timestamp").first()
            if released is not None:
                pods = kubes[f.cluster.pk].workload_pod_count(node.name)
                if pods:
                    out.append(Violation(
                        "I2", f"I2:{f.cluster.name}:{node.name}:{node.instance_id}:{released.allocation_id}",
                        f"node {node.name} ({node.instance_id}) runs {pods} workload pod(s) but "
                        f"{released.public_ip or released.allocation_id} was released from it "
                        f"at {released.timestamp:%H:%M:%S} ({released.reason})",
                    ))

    for spec in specs:
        if spec.enabled:
            observation.free[spec.name] = sorted(
                a.allocation_id for a in pool.values()
                if not a.association_id and selects(spec, a.tags)
                and a.allocation_id not in claims_by_eip
            )

    # --- I4: the record against AWS.
    for claim in open_claims:
        eip, row = claim.eip, claim.node
        shown_by_aws = pool.get(eip.allocation_id)
        key = f"I4:claim:{eip.allocation_id}:{row.name}"
        eni_id, private_ip = claim.eni_id or row.eni_id, claim.private_ip or row.private_ip
        if shown_by_aws is None:
            out.append(Violation("I4", key, f"open record of {eip.public_ip} on {row.name}, but AWS no longer "
                                            "lists that EIP in any pool"))
        elif shown_by_aws.eni_id != eni_id or (private_ip and shown_by_aws.private_ip != private_ip):
            where = f"on {shown_by_aws.eni_id} ({shown_by_aws.private_ip})" if shown_by_aws.eni_id else "free"
            out.append(Violation("I4", key, f"open record of {eip.public_ip} on {row.name} ({eni_id} {private_ip}), "
                                            f"but AWS shows it {where}"))
        elif claim.confirmed_at is None:
            out.append(Violation("I4", key + ":unconfirmed",
                                 f"{eip.public_ip} is on {row.name} but its claim was never confirmed"))
        current = by_name.get((row.cluster_id, row.name))
        now_on = current.instance if current is not None else None
        if eni_id and now_on is not None and now_on.eni_id and now_on.eni_id != eni_id:
            # The name came back on another instance (EKS reuses ip-… names): the record holds the old one's.
            out.append(Violation("I4", key + f":reused:{now_on.instance_id}",
                                 f"open record of {eip.public_ip} on {row.name} is for ENI {eni_id}, but {row.name} "
                                 f"is now instance {now_on.instance_id} (ENI {now_on.eni_id})"))
    recorded_by_eni = {row.eni_id: row for row in recorded if row.eni_id}
    for address in sorted(pool.values(), key=lambda a: a.public_ip):
        if not address.eni_id:
            continue
        owner = by_eni.get(address.eni_id)
        if owner is not None:
            instance = owner.instance
            assert instance is not None
            if instance.state in DEAD_STATES:
                out.append(Violation("I4", f"I4:dead:{address.allocation_id}:{instance.instance_id}",
                                     f"{address.public_ip} is still on node {owner.node.name}, whose instance "
                                     f"{instance.instance_id} is {instance.state}"))
            elif any(selects(s, address.tags) for s in owner.specs) and not any(
                    c.node.name == owner.node.name and c.node.cluster_id == owner.cluster.pk
                    for c in claims_by_eip.get(address.allocation_id, [])):
                out.append(Violation("I4", f"I4:unrecorded:{address.allocation_id}:{owner.node.name}",
                                     f"AWS shows {address.public_ip} on node {owner.node.name} without an open "
                                     "record"))
            continue
        known = recorded_by_eni.get(address.eni_id)
        if known is None:
            # No listed node and no node of the record has this ENI now: whose is it? A running instance that
            # is no node is a conflict eipdash reports and leaves alone; no instance, or a dead one, is a leak.
            region = _region_of(address, addresses)
            owner_id = ec2s[region].owner_of_eni(address.eni_id)
            owner_state = ec2s[region].describe_instances([owner_id]).get(owner_id) if owner_id else None
            if owner_state is None or owner_state.state in DEAD_STATES:
                held_by = f"instance {owner_id} {owner_state.state if owner_state else 'gone'}" if owner_id else (
                    "no instance")
                out.append(Violation("I4", f"I4:orphan:{address.allocation_id}:{address.eni_id}",
                                     f"{address.public_ip} is still on ENI {address.eni_id} ({held_by})"))
            continue
        last = instances[known.cluster.region].get(known.instance_id)
        state = last.state if last else "gone"
        if last is None or state in DEAD_STATES or known.name not in second.get(known.cluster_id, {}):
            out.append(Violation("I4", f"I4:gone:{address.allocation_id}:{known.name}:{known.instance_id}",
                                 f"{address.public_ip} is still on gone node {known.name} "
                                 f"(instance {known.instance_id} {state})"))
    for f in facts:
        label = f.node.labels.get(EIP_LABEL, "")
        instance = f.instance
        if not f.specs or not label or instance is None or instance.state not in LIVE_STATES:
            continue
        own_ips = {a.public_ip for a in pool_on.get(instance.eni_id or "", []) if a.private_ip == instance.private_ip}
        if label not in own_ips:
            out.append(Violation("I4", f"I4:label:{f.cluster.name}:{f.node.name}:{label}",
                                 f"node {f.node.name} is labelled {EIP_LABEL}={label}, but AWS shows "
                                 f"{', '.join(sorted(own_ips)) or 'no pool EIP'} on its primary IP"))
    return observation


def _region_of(address: Address, addresses: Mapping[str, list[Address]]) -> str:
    return next(region for region, found in addresses.items() if address in found)


class Checker:
    """Observations over time: I1–I3 count at once; an I4 finding counts once it was seen in consecutive
    observations spanning at least ``grace_seconds`` (and always in at least two)."""

    def __init__(self, *, grace_seconds: float, clock: Callable[[], float] = time.monotonic,
                 observe_fn: Callable[[], Observation] | None = None) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self.observe_fn = observe_fn or observe
        self._since: dict[str, tuple[float, int]] = {}  # key -> (first seen, consecutive observations)
        self.last: Observation | None = None

    def sample(self) -> list[Violation]:
        observation = self.observe_fn()
        return self.judge(observation)

    def judge(self, observation: Observation) -> list[Violation]:
        now = self.clock()
        self.last = observation
        seen: dict[str, tuple[float, int]] = {}
        confirmed: list[Violation] = []
        for violation in observation.violations:
            if violation.invariant not in GRACED:
                confirmed.append(violation)
                continue
            first, count = self._since.get(violation.key, (now, 0))
            seen[violation.key] = (first, count + 1)
            if count + 1 >= 2 and now - first >= self.grace_seconds:
                confirmed.append(violation)
        self._since = seen
        return confirmed

    def pending(self) -> bool:
        """Some I4 finding waits for its grace period."""
        return bool(self._since)


def unique(violations: Iterable[Violation]) -> list[Violation]:
    by_key: Mapping[str, Violation] = {v.key: v for v in violations}
    return sorted(by_key.values(), key=lambda v: (v.invariant, v.message))
