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
  persisted across consecutive observations spanning the grace period and two successful passes of every
  enabled spec have ended since it was first seen, or once it has lasted the stall period whatever the passes
  did (:class:`Checker`).

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
from pools.pool_rule import labels_match, selects
from pools.vocabulary import DEAD_STATES, GONE_STATE, LIVE_STATES

from .ec2 import Address, Ec2, Instance
from .kube import Kube, KubeNode, kube_for

BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
# Findings that may be true for the length of one pass (the record catching up with AWS): they need grace.
GRACED = frozenset({"I4"})


@dataclass(frozen=True)
class Violation:
    invariant: str  # I1 | I2 | I3 | I4
    key: str  # the same finding keeps the same key from one observation to the next
    message: str
    # An I4 finding that no pass could legitimately leave for a while: it counts at once.
    immediate: bool = False

    @property
    def graced(self) -> bool:
        return self.invariant in GRACED and not self.immediate

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
    # The primary ENIs of the nodes (listed or recorded) whose instance is going or gone.
    dead_enis: set[str] = field(default_factory=set)
    # allocation id -> (association id, ENI) of every associated pool EIP.
    associations: dict[str, tuple[str, str]] = field(default_factory=dict)
    # ENI -> the instance it is the primary ENI of (listed nodes, and rows of the record).
    instance_of_eni: dict[str, str] = field(default_factory=dict)
    # spec pk -> when its last successful pass ended (read the world and applied its whole plan), as that pass
    # wrote it: a mark compared only with the same spec's earlier mark, to count passes; never with another
    # clock (the worker's host may be off by seconds). A pass that failed on a fault could set nothing right.
    passes: dict[int, object] = field(default_factory=dict)
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


@dataclass
class _World:
    """One reading of AWS, Kubernetes and the record, in the order the module docstring explains."""

    specs: list[LaunchSpec]
    kubes: dict[int, Kube]
    ec2s: dict[str, Ec2]
    first: dict[int, dict[str, KubeNode]]
    second: dict[int, dict[str, KubeNode]]
    addresses: dict[str, list[Address]]
    instances: dict[str, dict[str, Instance]]
    open_claims: list[Assignment]
    recorded: list[Node]  # rows that may still hold a pool EIP or a claim although Kubernetes no longer lists them
    pool: dict[str, Address]  # allocation id -> address, for every EIP some spec of its region selects
    facts: list[_NodeFacts] = field(default_factory=list)
    by_eni: dict[str, _NodeFacts] = field(default_factory=dict)
    by_name: dict[tuple[int, str], _NodeFacts] = field(default_factory=dict)
    pool_on: dict[str, list[Address]] = field(default_factory=dict)
    claims_by_eip: dict[str, list[Assignment]] = field(default_factory=dict)
    claims_by_node: dict[int, list[Assignment]] = field(default_factory=dict)

    def own_pool_eips(self, instance: Instance | None) -> list[Address]:
        """The pool EIPs on the primary private IP of the instance's primary ENI."""
        if instance is None:
            return []
        return [a for a in self.pool_on.get(instance.eni_id or "", []) if a.private_ip == instance.private_ip]


def observe(
    *,
    ec2_for: Callable[[str], Ec2] = _ec2_default,
    kube_for: Callable[[Cluster], Kube] = _kube_default,
) -> Observation:
    """Read AWS, Kubernetes and the record once and list what breaks I1–I4 (I4 ungraced)."""
    world = read_world(ec2_for, kube_for)
    observation = Observation(nodes=sum(len(listed) for listed in world.second.values()), addresses=len(world.pool),
                              passes={spec.pk: spec.last_successful_pass_at for spec in world.specs
                                      if spec.enabled})
    out = observation.violations
    out += two_pool_eips_on_one_eni(world)
    out += one_eip_recorded_twice(world)
    for f in world.facts:
        out += schedulable_without_eip(world, f, observation)
        out += released_while_busy(world, f)
    observation.free = free_pool_eips(world)
    observation.dead_enis = dead_enis(world)
    observation.instance_of_eni = {row.eni_id: row.instance_id for row in world.recorded if row.eni_id} | {
        f.instance.eni_id: f.instance.instance_id for f in world.facts if f.instance and f.instance.eni_id}
    observation.associations = {a.allocation_id: (a.association_id, a.eni_id) for a in world.pool.values()
                                if a.association_id and a.eni_id}
    out += records_that_disagree_with_aws(world)
    out += pool_eips_without_their_record(world)
    out += labels_that_lie(world)
    return observation


def read_world(ec2_for: Callable[[str], Ec2], kube_for: Callable[[Cluster], Kube]) -> _World:
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
    pool = _pool_addresses(addresses, specs)
    recorded = _recorded_holders(pool, open_claims)
    wanted = _instances_to_describe(first, clusters, recorded)
    instances = {region: ec2s[region].describe_instances(wanted.get(region, set())) for region in regions}
    second = {pk: {n.name: n for n in kube.list_all_nodes()} for pk, kube in kubes.items()}
    world = _World(specs, kubes, ec2s, first, second, addresses, instances, open_claims, recorded, pool)
    _index(world, clusters)
    return world


def _pool_addresses(addresses: Mapping[str, list[Address]], specs: list[LaunchSpec]) -> dict[str, Address]:
    """The addresses some spec of their region selects, by allocation id."""
    return {address.allocation_id: address for region, found in addresses.items() for address in found
            if any(selects(s, address.tags) for s in specs if s.cluster.region == region)}


def _recorded_holders(pool: Mapping[str, Address], open_claims: list[Assignment]) -> list[Node]:
    """Nodes of the record that may still hold a pool EIP, or an open claim, although Kubernetes may no longer
    list them: their instances are described too, to tell a dead instance from a live one."""
    held_enis = {a.eni_id for a in pool.values() if a.eni_id}
    return list(Node.objects.filter(Q(eni_id__in=held_enis) | Q(pk__in=[c.node_id for c in open_claims]))
                .exclude(eni_id="", instance_id="").select_related("cluster"))


def _instances_to_describe(first: Mapping[int, Mapping[str, KubeNode]], clusters: Mapping[int, Cluster],
                           recorded: list[Node]) -> dict[str, set[str]]:
    """By region: the instances of the listed nodes and of the recorded holders."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for pk, listed in first.items():
        wanted[clusters[pk].region].update(n.instance_id for n in listed.values() if n.instance_id)
    for row in recorded:
        if row.instance_id:
            wanted[row.cluster.region].add(row.instance_id)
    return wanted


def _index(world: _World, clusters: Mapping[int, Cluster]) -> None:
    """The nodes Kubernetes lists in both readings, with their instances and their specs; who holds what."""
    startup_taint = settings.EIPDASH_STARTUP_TAINT
    for pk, listed in world.second.items():
        cluster = clusters[pk]
        for name, node in listed.items():
            before = world.first[pk].get(name)
            instance = world.instances[cluster.region].get(node.instance_id) if node.instance_id else None
            own_specs = [s for s in world.specs if s.cluster_id == pk and labels_match(s.labels, node.labels)]
            stable = (before is not None and before.resource_version == node.resource_version
                      and schedulable(node, startup_taint))
            world.facts.append(_NodeFacts(node, cluster, instance, own_specs, stable))
    # Which node each primary ENI belongs to.
    world.by_eni = {f.instance.eni_id: f for f in world.facts if f.instance and f.instance.eni_id}
    world.by_name = {(f.cluster.pk, f.node.name): f for f in world.facts}
    pool_on: dict[str, list[Address]] = defaultdict(list)
    for address in world.pool.values():
        if address.eni_id:
            pool_on[address.eni_id].append(address)
    world.pool_on = dict(pool_on)
    claims_by_eip: dict[str, list[Assignment]] = defaultdict(list)
    claims_by_node: dict[int, list[Assignment]] = defaultdict(list)
    for claim in world.open_claims:
        claims_by_eip[claim.eip.allocation_id].append(claim)
        claims_by_node[claim.node_id].append(claim)
    world.claims_by_eip, world.claims_by_node = dict(claims_by_eip), dict(claims_by_node)


# --- I3 ------------------------------------------------------------------------------------------------


def two_pool_eips_on_one_eni(world: _World) -> list[Violation]:
    """I3: two pool EIPs on one node (AWS itself never puts one EIP on two ENIs)."""
    found = []
    for eni_id, on_eni in sorted(world.pool_on.items()):
        if len(on_eni) > 1:
            owner = world.by_eni.get(eni_id)
            where = f"node {owner.node.name}" if owner else f"ENI {eni_id}"
            ips = ", ".join(sorted(a.public_ip for a in on_eni))
            found.append(Violation("I3", f"I3:two:{eni_id}", f"{where} holds {len(on_eni)} pool EIPs: {ips}"))
    return found


def one_eip_recorded_twice(world: _World) -> list[Violation]:
    """I3 in the record: an EIP open on two nodes, or a node holding two EIPs."""
    found = []
    for allocation_id, claims in sorted(world.claims_by_eip.items()):
        if len(claims) > 1:
            names = ", ".join(sorted(c.node.name for c in claims))
            found.append(Violation("I3", f"I3:record:{allocation_id}",
                                   f"the record has {claims[0].eip.public_ip} open on {len(claims)} nodes: {names}"))
    for claims in world.claims_by_node.values():
        if len(claims) > 1:
            ips = ", ".join(sorted(c.eip.public_ip for c in claims))
            found.append(Violation("I3", f"I3:record-node:{claims[0].node_id}",
                                   f"the record has node {claims[0].node.name} holding {len(claims)} EIPs: {ips}"))
    return found


# --- I1 and I2, node by node ---------------------------------------------------------------------------


def schedulable_without_eip(world: _World, f: _NodeFacts, observation: Observation) -> list[Violation]:
    """I1; and who waits while an EIP is free (the campaign's latency figure)."""
    instance, node = f.instance, f.node
    if not f.specs or node.instance_id is None or instance is None or instance.state not in LIVE_STATES:
        return []
    if world.own_pool_eips(instance):
        return []
    enabled = [s for s in f.specs if s.enabled]
    if not node.draining:
        for spec in enabled:
            observation.waiting.setdefault(spec.name, []).append(node.name)
    if not (enabled and f.stable):
        return []
    return [Violation("I1", f"I1:{f.cluster.name}:{node.name}:{node.instance_id}",
                      f"node {node.name} ({node.instance_id}) is schedulable without a pool EIP: "
                      f"{why_no_eip(world, f)}")]


def why_no_eip(world: _World, f: _NodeFacts) -> str:
    instance = f.instance
    assert instance is not None
    if not instance.eni_id or not instance.private_ip:
        return "its instance has no primary private IPv4"
    if any(a.eni_id == instance.eni_id for a in world.pool.values()):
        return "a pool EIP sits on another private IP of its primary ENI"
    if any(a.eni_id == instance.eni_id and a.private_ip == instance.private_ip
           for a in world.addresses[f.cluster.region]):
        return "a non-pool EIP sits on its primary IP"
    return "no EIP on its primary IP"


def released_while_busy(world: _World, f: _NodeFacts) -> list[Violation]:
    """I2. A schedulable node without its EIP is I1's case (pods may have come after the release); I2 is the
    node that cannot take new pods, so its workload pods were there before its EIP went."""
    instance, node = f.instance, f.node
    if not f.specs or node.instance_id is None or instance is None or instance.state not in LIVE_STATES:
        return []
    if world.own_pool_eips(instance) or schedulable(node, settings.EIPDASH_STARTUP_TAINT):
        return []
    released = Event.objects.filter(kind=Event.Kind.RELEASED, cluster=f.cluster.name, node=node.name,
                                    instance_id=node.instance_id).order_by("-timestamp").first()
    if released is None:
        return []
    pods = world.kubes[f.cluster.pk].workload_pod_count(node.name)
    if not pods:
        return []
    return [Violation("I2", f"I2:{f.cluster.name}:{node.name}:{node.instance_id}:{released.allocation_id}",
                      f"node {node.name} ({node.instance_id}) runs {pods} workload pod(s) but "
                      f"{released.public_ip or released.allocation_id} was released from it "
                      f"at {released.timestamp:%H:%M:%S} ({released.reason})")]


def dead_enis(world: _World) -> set[str]:
    found = {f.instance.eni_id for f in world.facts
             if f.instance is not None and f.instance.eni_id and f.instance.state in DEAD_STATES}
    for row in world.recorded:
        instance = world.instances[row.cluster.region].get(row.instance_id)
        if row.eni_id and (instance is None or instance.state in DEAD_STATES):
            found.add(row.eni_id)
    return found


def free_pool_eips(world: _World) -> dict[str, list[str]]:
    """spec name -> its pool EIPs that AWS shows free and no record claims."""
    return {spec.name: sorted(a.allocation_id for a in world.pool.values()
                              if not a.association_id and selects(spec, a.tags)
                              and a.allocation_id not in world.claims_by_eip)
            for spec in world.specs if spec.enabled}


# --- I4: the record against AWS ------------------------------------------------------------------------


def records_that_disagree_with_aws(world: _World) -> list[Violation]:
    found = []
    for claim in world.open_claims:
        eip, row = claim.eip, claim.node
        shown_by_aws = world.pool.get(eip.allocation_id)
        key = f"I4:claim:{eip.allocation_id}:{row.name}"
        eni_id, private_ip = claim.eni_id or row.eni_id, claim.private_ip or row.private_ip
        if shown_by_aws is None:
            found.append(Violation("I4", key, f"open record of {eip.public_ip} on {row.name}, but AWS no longer "
                                              "lists that EIP in any pool"))
        elif shown_by_aws.eni_id != eni_id or (private_ip and shown_by_aws.private_ip != private_ip):
            where = f"on {shown_by_aws.eni_id} ({shown_by_aws.private_ip})" if shown_by_aws.eni_id else "free"
            found.append(Violation("I4", key, f"open record of {eip.public_ip} on {row.name} ({eni_id} "
                                              f"{private_ip}), but AWS shows it {where}"))
        elif claim.confirmed_at is None:
            found.append(Violation("I4", key + ":unconfirmed",
                                   f"{eip.public_ip} is on {row.name} but its claim was never confirmed"))
        current = world.by_name.get((row.cluster_id, row.name))
        now_on = current.instance if current is not None else None
        if eni_id and now_on is not None and now_on.eni_id and now_on.eni_id != eni_id:
            # The name came back on another instance (EKS reuses ip-… names): the record holds the old one's.
            found.append(Violation("I4", key + f":reused:{now_on.instance_id}",
                                   f"open record of {eip.public_ip} on {row.name} is for ENI {eni_id}, but "
                                   f"{row.name} is now instance {now_on.instance_id} (ENI {now_on.eni_id})"))
    return found


def pool_eips_without_their_record(world: _World) -> list[Violation]:
    """Every pool EIP AWS shows on a node has its open record; none stays on a gone node or dead instance."""
    recorded_by_eni = {row.eni_id: row for row in world.recorded if row.eni_id}
    found: list[Violation] = []
    for address in sorted(world.pool.values(), key=lambda a: a.public_ip):
        if not address.eni_id:
            continue
        owner = world.by_eni.get(address.eni_id)
        if owner is not None:
            found += on_a_listed_node(world, address, owner)
        elif (known := recorded_by_eni.get(address.eni_id)) is not None:
            found += on_a_recorded_node(world, address, known)
        else:
            found += on_an_unknown_eni(world, address)
    return found


def on_a_listed_node(world: _World, address: Address, owner: _NodeFacts) -> list[Violation]:
    instance = owner.instance
    assert instance is not None
    if instance.state in DEAD_STATES:
        return [Violation("I4", f"I4:dead:{address.allocation_id}:{instance.instance_id}",
                          f"{address.public_ip} is still on node {owner.node.name}, whose instance "
                          f"{instance.instance_id} is {instance.state}")]
    recorded = any(c.node.name == owner.node.name and c.node.cluster_id == owner.cluster.pk
                   for c in world.claims_by_eip.get(address.allocation_id, []))
    if any(selects(s, address.tags) for s in owner.specs) and not recorded:
        return [Violation("I4", f"I4:unrecorded:{address.allocation_id}:{owner.node.name}",
                          f"AWS shows {address.public_ip} on node {owner.node.name} without an open record")]
    return []


def on_a_recorded_node(world: _World, address: Address, known: Node) -> list[Violation]:
    last = world.instances[known.cluster.region].get(known.instance_id)
    state = last.state if last else GONE_STATE
    if last is None or state in DEAD_STATES or known.name not in world.second.get(known.cluster_id, {}):
        return [Violation("I4", f"I4:gone:{address.allocation_id}:{known.name}:{known.instance_id}",
                          f"{address.public_ip} is still on gone node {known.name} "
                          f"(instance {known.instance_id} {state})")]
    return []


def on_an_unknown_eni(world: _World, address: Address) -> list[Violation]:
    """No listed node and no node of the record has this ENI now: whose is it? A running instance that is no
    node is a conflict eipdash reports and leaves alone; no instance, or a dead one, is a leak."""
    assert address.eni_id is not None
    ec2 = world.ec2s[_region_of(address, world.addresses)]
    owner_id = ec2.owner_of_eni(address.eni_id)
    owner_state = ec2.describe_instances([owner_id]).get(owner_id) if owner_id else None
    if owner_state is not None and owner_state.state not in DEAD_STATES:
        return []
    held_by = f"instance {owner_id} {owner_state.state if owner_state else GONE_STATE}" if owner_id else "no instance"
    return [Violation("I4", f"I4:orphan:{address.allocation_id}:{address.eni_id}",
                      f"{address.public_ip} is still on ENI {address.eni_id} ({held_by})")]


def labels_that_lie(world: _World) -> list[Violation]:
    """The `eipdash.io/eip` label tells the truth."""
    found = []
    for f in world.facts:
        label = f.node.labels.get(EIP_LABEL, "")
        instance = f.instance
        if not f.specs or not label or instance is None or instance.state not in LIVE_STATES:
            continue
        own_ips = {a.public_ip for a in world.own_pool_eips(instance)}
        if label not in own_ips:
            found.append(Violation("I4", f"I4:label:{f.cluster.name}:{f.node.name}:{label}",
                                   f"node {f.node.name} is labelled {EIP_LABEL}={label}, but AWS shows "
                                   f"{', '.join(sorted(own_ips)) or 'no pool EIP'} on its primary IP"))
    return found


def _region_of(address: Address, addresses: Mapping[str, list[Address]]) -> str:
    return next(region for region, found in addresses.items() if address in found)


# An association made onto an instance that had been dead this long before is the engine's doing: a pass
# looks at its targets' instances right before associating, so only a look that old (a slow machine, a budget
# wait) could miss the death. The association's own moment is unknown; it is no earlier than the sample
# before the one that first shows it, and that lower bound is what is compared, so a slow sampler never
# makes a fresh association look late.
DEAD_BEFORE_SECONDS = 3.0


class Checker:
    """Observations over time: I1–I3 count at once. An I4 finding counts once it was seen in consecutive
    observations (always at least two) spanning at least ``grace_seconds``, and two successful passes of every
    enabled spec have ended since it was first seen: "within one pass" is counted in passes that ran, because
    a frozen or restarting worker delays every pass on a slow machine, and a pass that failed on a fault (a
    read refused, a write that got a 500) can set nothing right. A finding that lasts ``stall_seconds``
    (default: twice the grace) counts whatever the passes did: passes that stop or keep failing are a fault
    too. At the end, with the faults over, ``settle`` counts every finding still there that two successful
    passes did not set right, however short. An association made onto an instance that was already seen dead
    counts at once."""

    def __init__(self, *, grace_seconds: float, clock: Callable[[], float] = time.monotonic,
                 observe_fn: Callable[[], Observation] | None = None, stall_seconds: float | None = None) -> None:
        self.grace_seconds = grace_seconds
        self.stall_seconds = 2 * grace_seconds if stall_seconds is None else stall_seconds
        self.clock = clock
        self.observe_fn = observe_fn or observe
        # key -> (first seen, consecutive observations, the pass counts when first seen)
        self._since: dict[str, tuple[float, int, dict[int, int]]] = {}
        self._passes: dict[int, int] = {}  # spec pk -> pass ends observed (a change of its mark)
        self._marks: dict[int, object] = {}  # spec pk -> its mark at the last observation
        self._dead_since: dict[str, float] = {}  # ENI -> when its instance was first seen dead
        self._associations: set[tuple[str, str]] | None = None  # (allocation id, association id) last time
        self._last_sample_at: float | None = None
        self.last: Observation | None = None

    def sample(self) -> list[Violation]:
        observation = self.observe_fn()
        return self.judge(observation)

    def associated_onto_the_dead(self, observation: Observation, now: float) -> list[Violation]:
        """New associations (not in the last observation) onto an ENI whose instance had been dead for
        DEAD_BEFORE_SECONDS by the last observation, the earliest the association can have been made."""
        current = {(allocation_id, association_id)
                   for allocation_id, (association_id, _) in observation.associations.items()}
        found = []
        made_after = self._last_sample_at
        if self._associations is not None and made_after is not None:
            for allocation_id, (association_id, eni_id) in sorted(observation.associations.items()):
                dead_since = self._dead_since.get(eni_id)
                if ((allocation_id, association_id) not in self._associations and dead_since is not None
                        and made_after - dead_since >= DEAD_BEFORE_SECONDS):
                    found.append(Violation("I4", f"I4:onto-dead:{allocation_id}:{association_id}",
                                           f"{allocation_id} was associated onto {eni_id}, whose instance had been "
                                           f"dead for at least {made_after - dead_since:.1f}s", immediate=True))
        self._associations = current
        self._last_sample_at = now
        self._dead_since = {eni: self._dead_since.get(eni, now) for eni in observation.dead_enis}
        return found

    def count_passes(self, observation: Observation) -> None:
        """Two samples that see another mark: at least one pass of the spec ended between them (several
        passes between two samples count as one, which only ever delays a finding)."""
        for spec, mark in observation.passes.items():
            ended = spec in self._marks and self._marks[spec] != mark
            self._passes[spec] = self._passes.get(spec, 0) + ended
        self._marks = dict(observation.passes)

    def passes_since(self, observation: Observation, counts_then: Mapping[int, int]) -> int:
        """The fewest passes any enabled spec ended since then (2 when no spec reports its passes)."""
        return min((self._passes[spec] - counts_then.get(spec, 0) for spec in observation.passes), default=2)

    def judge(self, observation: Observation) -> list[Violation]:
        now = self.clock()
        self.last = observation
        self.count_passes(observation)
        seen: dict[str, tuple[float, int, dict[int, int]]] = {}
        confirmed: list[Violation] = self.associated_onto_the_dead(observation, now)
        for violation in observation.violations:
            if not violation.graced:
                confirmed.append(violation)
                continue
            first, count, counts_then = self._since.get(violation.key, (now, 0, dict(self._passes)))
            seen[violation.key] = (first, count + 1, counts_then)
            lasted = now - first
            passed = self.passes_since(observation, counts_then) >= 2 or lasted >= self.stall_seconds
            if count + 1 >= 2 and lasted >= self.grace_seconds and passed:
                confirmed.append(violation)
        self._since = seen
        return confirmed

    def settle(self) -> list[Violation]:
        """A last observation once the faults are over: what `sample` confirms, plus every I4 finding seen
        before that two successful passes of every enabled spec did not set right, whatever the grace says (a
        world left alone must converge, and the grace may be longer than the quiet time before this)."""
        observation = self.observe_fn()
        before = dict(self._since)
        confirmed = self.judge(observation)
        keys = {v.key for v in confirmed}
        for violation in observation.violations:
            if not violation.graced or violation.key in keys or violation.key not in before:
                continue
            _first, _count, counts_then = before[violation.key]
            if self.passes_since(observation, counts_then) >= 2:
                confirmed.append(violation)
        return confirmed

    def pending(self) -> bool:
        """Some I4 finding waits for its grace period."""
        return bool(self._since)


def unique(violations: Iterable[Violation]) -> list[Violation]:
    by_key: Mapping[str, Violation] = {v.key: v for v in violations}
    return sorted(by_key.values(), key=lambda v: (v.invariant, v.message))
