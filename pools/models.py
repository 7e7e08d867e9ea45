"""The record: snapshots of AWS and Kubernetes, the claims that keep workers from racing, and history.

AWS and Kubernetes hold the truth. These tables hold what eipdash saw and did.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models
from django.db.models import Q

from .vocabulary import CloseKind, EventKind, NodeState

SYSTEM_ACTOR = "system"  # the actor of everything the workers do on their own (events, claims)
# A username (150) and "(API token eipd_XXXXXXXX)": pools/audit.py.
ACTOR_MAX = 200


def _same_values(choices: type[models.TextChoices], vocabulary: type[StrEnum]) -> None:
    """The model's choices are the planner's vocabulary, member for member: a state or kind added to the
    planner without its label here would otherwise be stored and shown without one."""
    if [c.value for c in choices] != [v.value for v in vocabulary]:
        raise TypeError(f"{choices.__qualname__} must list exactly {[v.value for v in vocabulary]}")


class Cluster(models.Model):
    name = models.CharField(max_length=100, unique=True)
    region = models.CharField(max_length=32)
    # Empty means the current context of the kubeconfig (or the in-cluster config).
    kube_context = models.CharField(max_length=200, blank=True, default="")
    # A kubeconfig file for this cluster alone (several clusters from one install); empty means the
    # default lookup (KUBECONFIG, ~/.kube/config, or the in-cluster config).
    kubeconfig = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class LaunchSpec(models.Model):
    name = models.CharField(max_length=253, unique=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="launch_specs")
    # {"label-key": "value"}: a node belongs to the spec when it carries all of them.
    labels = models.JSONField(default=dict)
    tag_key = models.CharField(max_length=128)
    # None selects every EIP that carries tag_key, whatever its value.
    tag_value = models.CharField(max_length=256, null=True, blank=True)
    enabled = models.BooleanField(default=True)
    # Headroom: fewer free EIPs than this raises the pool_low alert (an eipdash extension of the Ocean
    # document, `elasticIpPool.minFree`; 0: no such alert).
    min_free = models.PositiveIntegerField(default=0)
    # Keys of the alerts (pool exhausted, conflicts) that are currently true. An alert is recorded as
    # an Event when it starts, not again on every pass while it lasts.
    active_alerts = models.JSONField(default=list, blank=True)
    # Key -> when (ISO 8601, the pass's time) the pass that no longer saw it ended it: the overview's "resolved
    # at". Kept for an hour (pools/alerts.py `alerts_ended`).
    alerts_ended = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The last pass that ran, whatever came of it (a read failure included).
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    # The last pass that read AWS and Kubernetes and applied its whole plan without an error: a pass
    # that keeps failing shows here while last_reconciled_at keeps moving.
    last_successful_pass_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def region(self) -> str:
        return self.cluster.region

    def selector_text(self) -> str:
        return self.tag_key if self.tag_value is None else f"{self.tag_key}={self.tag_value}"


class SpecFence(models.Model):
    """The engine's own bookkeeping of one launch spec, written only by the holder of the spec's lease.

    - number: the fencing number of the latest lease holder (pools/locks.py). It only grows, so a holder that
      finds a higher one here has lost the spec and writes nothing more.
    - fresh_from_seq: the region's sequence number (RegionSequence) a shared DescribeAddresses reading must have
      been taken at (or later) to serve this spec (workers/readings.py): set right after each of its changes
      to AWS and at the end of each of its passes, so that the reading shows its last change and is no older
      than its last pass. Readings are ordered by the region's own sequence, never by host clocks.
    - quiet_fingerprint: what the spec's last pass planned from (workers/observe.py `quiet_fingerprint`) when that
      pass had nothing to do, else "": a pass that reads the same skips its snapshot write and its plan.

    Keyed by the spec's id without a foreign key: the lease of a spec being deleted still fences.
    """

    spec_id = models.BigIntegerField(primary_key=True)
    number = models.BigIntegerField(default=0)
    fresh_from_seq = models.BigIntegerField(default=0)
    quiet_fingerprint = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"spec {self.spec_id}: fence {self.number}, readings from {self.fresh_from_seq}"


class SpecPlan(models.Model):
    """The plan of the spec's latest pass, as the spec page and the API show it: one row per spec, written over
    by each pass (services.spec_plan_store), so that no request runs the planner (selectors.plan_preview).

    - lines: the plan in words (planner.Plan.describe()), as the pass made it;
    - drain: for a disabled spec, every EIP it still holds with what holds it back (pools/drain.py DrainHold,
      as JSON objects); empty for an enabled spec;
    - planned_at: when the pass planned, on the clock the pass plans with (Redis's, else the database's). The
      plan is made from the rows that very pass has just written from its reading of AWS and Kubernetes, so this
      is also the time of the snapshot it was made from;
    - fence: the fencing number of the pass that made it (pools/locks.py; 0 for a pass run without a lease). A
      write is fenced like the pass's others, and a lower number never replaces a higher one;
    - spec_updated_at: the spec's updated_at as that pass read it: the version of the spec planned for (an edit
      or a disable since then makes the plan outdated until the next pass).
    """

    spec = models.OneToOneField(LaunchSpec, on_delete=models.CASCADE, primary_key=True, related_name="stored_plan")
    lines = models.JSONField(default=list)
    drain = models.JSONField(default=list, blank=True)
    planned_at = models.DateTimeField()
    fence = models.BigIntegerField(default=0)
    spec_updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"plan of spec {self.spec_id} at {self.planned_at:%Y-%m-%dT%H:%M:%SZ} (fence {self.fence})"


class RegionFacts(models.Model):
    """What a region's account and network say, read once per region every few minutes (workers/region_facts.py):
    the EIP quota, and where each subnet's egress leaves. A read that failed stores its error and no value
    (eip_quota None, egress {}): the page says it could not read and why, never shows a guess or an old figure."""

    region = models.CharField(max_length=32, primary_key=True)
    # The account's EIP quota of the region; null when it could not be read.
    eip_quota = models.IntegerField(null=True, blank=True)
    # Where it came from: "service-quotas" (L-0263D0A3) or "account-attribute" (vpc-max-elastic-ips).
    eip_quota_source = models.CharField(max_length=32, blank=True, default="")
    quota_error = models.TextField(blank=True, default="")
    quota_read_at = models.DateTimeField(null=True, blank=True)
    # Subnet id -> {"via": "internet-gateway" | "nat" | "none", "target": "igw-…" | "nat-…" | "",
    # "address": the NAT gateway's public IP or ""} (pools/egress.py).
    egress = models.JSONField(default=dict, blank=True)
    egress_error = models.TextField(blank=True, default="")
    egress_read_at = models.DateTimeField(null=True, blank=True)
    # The turn of the worker reading the facts now (a random token its claim wrote): its final write lands only
    # while the row still carries it, so a worker that froze past the window writes nothing over newer facts.
    facts_claim = models.CharField(max_length=32, blank=True, default="")
    # DescribeAddresses readings of the region, numbered as they start (addresses_read), and the newest one
    # saved into ElasticIP and UnmanagedAddress (addresses_saved): a reading saved after a newer one was (two
    # passes read at once) writes nothing, so the rows and the pool_joined / pool_left trail never step back.
    addresses_read = models.BigIntegerField(default=0)
    addresses_saved = models.BigIntegerField(default=0)
    # The reading the rows were last written from in full (a digest of its addresses and of the region's pool
    # selectors), and RegionSequence.addresses_written then: a save of an equal reading with no row written since
    # moves last_seen_at only (workers/observe.py).
    addresses_digest = models.CharField(max_length=64, blank=True, default="")
    addresses_written = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.region}: quota {self.eip_quota}"


class RegionSequence(models.Model):
    """A counter per region, bumped right before and right after every change eipdash makes to AWS there
    (an association, a disassociation, a manual move). Each shared reading stores the value it was taken at."""

    region = models.CharField(max_length=32, primary_key=True)
    value = models.BigIntegerField(default=0)
    # Bumped, in the writer's transaction, by every write of the region's ElasticIP rows outside a reading's save
    # (services.region_addresses_written): the next save then writes the rows in full, whatever it read.
    addresses_written = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.region}: {self.value}"


class AddressColumns(models.Model):
    """One EIP as DescribeAddresses showed it: the columns of a pool EIP and of an unmanaged one."""

    allocation_id = models.CharField(max_length=64, unique=True)
    region = models.CharField(max_length=32)
    public_ip = models.GenericIPAddressField(protocol="IPv4")
    tags = models.JSONField(default=dict)
    association_id = models.CharField(max_length=64, blank=True, default="")
    instance_id = models.CharField(max_length=32, blank=True, default="")
    eni_id = models.CharField(max_length=32, blank=True, default="")
    private_ip = models.CharField(max_length=45, blank=True, default="")
    # DescribeAddresses' PublicIpv4Pool: "amazon" for Amazon's addresses; a BYOIP pool's id otherwise (those
    # cost nothing per hour). Empty where it was not reported.
    public_ipv4_pool = models.CharField(max_length=64, blank=True, default="")
    last_seen_at = models.DateTimeField()

    class Meta:
        abstract = True


class ElasticIP(AddressColumns):
    """The last snapshot of one pool EIP as DescribeAddresses showed it."""

    # No longer returned by DescribeAddresses (released from the account) or no longer tagged.
    gone = models.BooleanField(default=False)
    # When a reading first showed it in a pool (null for rows older than the column): the start of its
    # address-hours in the idle cost (pools/capacity.py).
    first_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["public_ip"]
        permissions = [("reassign_elasticip", "Can move an Elastic IP to another node by hand")]
        indexes = [models.Index(fields=["region", "gone"])]

    def __str__(self) -> str:
        return f"{self.public_ip} ({self.allocation_id})"


class UnmanagedAddress(AddressColumns):
    """An EIP of a region that no launch spec's pool selects, as the last DescribeAddresses showed it.

    Only for the inventory's "show unmanaged" listing (an IPAM user expects to see every address of the
    region). It lives apart from ElasticIP on purpose: every pool query, claim and invariant reads
    ElasticIP, and none of them may ever see an address eipdash does not manage.
    """

    class Meta:
        ordering = ["public_ip"]
        indexes = [models.Index(fields=["region"], name="unmanaged_region")]

    def __str__(self) -> str:
        return f"{self.public_ip} ({self.allocation_id}, unmanaged)"


class Node(models.Model):
    class State(models.TextChoices):
        WAITING = NodeState.WAITING, "waiting for an EIP"
        READY = NodeState.READY, "ready with its EIP"
        DRAINING = NodeState.DRAINING, "draining"
        STOPPED = NodeState.STOPPED, "instance stopped"
        RELEASED = NodeState.RELEASED, "released"
        GONE = NodeState.GONE, "gone"
        CONFLICT = NodeState.CONFLICT, "conflict"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=253)
    instance_id = models.CharField(max_length=32)
    az = models.CharField(max_length=32, blank=True, default="")
    launch_spec = models.ForeignKey(LaunchSpec, on_delete=models.SET_NULL, null=True, blank=True, related_name="nodes")
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    labels = models.JSONField(default=dict, blank=True)
    # What the last pass saw; the dashboard and the plan preview read these, never the APIs.
    instance_state = models.CharField(max_length=16, blank=True, default="")
    eni_id = models.CharField(max_length=32, blank=True, default="")
    private_ip = models.CharField(max_length=45, blank=True, default="")
    # The subnet of its instance (DescribeInstances): its route table says where its egress leaves.
    subnet_id = models.CharField(max_length=32, blank=True, default="")
    startup_tainted = models.BooleanField(default=False)
    draining = models.BooleanField(default=False)
    # Why it drains (cordoned, cluster-autoscaler, karpenter, deleting), "" when it does not: shown on the
    # dashboard and in the reason of the release.
    drain_reason = models.CharField(max_length=32, blank=True, default="")
    foreign_eip = models.BooleanField(default=False)
    eip_label = models.CharField(max_length=45, blank=True, default="")
    workload_pods = models.IntegerField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # When the Kubernetes node object disappeared.
    deleted_at = models.DateTimeField(null=True, blank=True)
    eip_ready_at = models.DateTimeField(null=True, blank=True)
    # When DescribeInstances last confirmed instance_state, eni_id and private_ip: a steady pass asks EC2
    # again only for new instances and for facts older than EIPDASH_INSTANCE_RECHECK_SECONDS.
    instance_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="node_unique_name")]
        # A cluster keeps a row per node it ever had (100,000s of deleted ones): every read the pass and the
        # dashboard repeat must go by an index, never by the whole table.
        indexes = [
            # The live nodes of the specs by state (the pool tiles), with their draining flag: the tiles count the
            # nodes holding an EIP from this index alone (pools/selectors.py _counts_from_live_nodes).
            models.Index(fields=["launch_spec", "state", "draining"], name="node_spec_state_draining"),
            # The spec's nodes deleted since a moment (the demand's history), and its live ones (deleted_at IS NULL)
            # with their state and first sighting: the demand stamps count and sum those from this index alone
            # (pools/selectors_demand.py _live_parts).
            models.Index(fields=["launch_spec", "deleted_at", "state", "first_seen_at"],
                         name="node_spec_deleted_state"),
            # The pool EIP on a node's ENI ties that node to the pool (the pass and the plan preview).
            models.Index(fields=["eni_id"], name="node_eni"),
            # The time-to-EIP histogram: nodes that got their EIP in the last 24 hours, with when they were first
            # seen, so that their waits are read from the index alone.
            models.Index(fields=["eip_ready_at", "first_seen_at"], name="node_eip_ready_wait"),
            # The nodes pages: live nodes by name, without walking past the deleted ones (PostgreSQL; one index
            # per filter the pages use, as a partial index serves only a query that repeats its condition).
            models.Index(fields=["name", "id"], condition=~Q(state="gone"), name="node_live_name"),
            models.Index(fields=["name", "id"], condition=~Q(state__in=["gone", "released"]),
                         name="node_active_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def time_to_eip_seconds(self) -> float | None:
        if self.eip_ready_at is None:
            return None
        return (self.eip_ready_at - self.first_seen_at).total_seconds()


class Assignment(models.Model):
    """One EIP on one node, from the claim to the release. An open row is also the claim."""

    class CloseKind(models.TextChoices):
        # Why a row was closed. Only a real refusal by AWS sends the EIP to the back of the free order:
        # a throttle or a crash says nothing about the EIP.
        RELEASED = CloseKind.RELEASED, "released"
        REFUSED = CloseKind.REFUSED, "refused by AWS"
        TRANSIENT = CloseKind.TRANSIENT, "transient failure (throttle, timeout, 5xx)"
        INTERRUPTED = CloseKind.INTERRUPTED, "interrupted pass"
        MOVED = CloseKind.MOVED, "moved or left the pool outside eipdash"

    eip = models.ForeignKey(ElasticIP, on_delete=models.PROTECT, related_name="assignments")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="assignments")
    launch_spec = models.ForeignKey(
        LaunchSpec, on_delete=models.SET_NULL, null=True, blank=True, related_name="assignments"
    )
    # The ENI and private IP the EIP was associated with: a gone node can still be released.
    eni_id = models.CharField(max_length=32, blank=True, default="")
    private_ip = models.CharField(max_length=45, blank=True, default="")
    association_id = models.CharField(max_length=64, blank=True, default="")
    opened_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True, default="")
    close_kind = models.CharField(max_length=16, choices=CloseKind.choices, blank=True, default="")
    actor = models.CharField(max_length=ACTOR_MAX, default=SYSTEM_ACTOR)
    # The fencing number of the pass that opened the claim (pools/locks.py). An unconfirmed claim of an
    # older holder may still have its AssociateAddress on the way: a newer holder leaves it alone until the
    # longest such call is over, one lease time after `stale_since`: when that holder last renewed its lease
    # (or, if Redis lost that, when a newer holder first saw the claim), on Redis's clock, one for every worker.
    fence = models.BigIntegerField(default=0)
    stale_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # The database, not hope, keeps one EIP on one node and one node on one EIP.
            models.UniqueConstraint(
                fields=["eip"], condition=Q(closed_at__isnull=True), name="one_open_assignment_per_eip"
            ),
            models.UniqueConstraint(
                fields=["node"], condition=Q(closed_at__isnull=True), name="one_open_assignment_per_node"
            ),
        ]
        indexes = [
            models.Index(fields=["launch_spec", "closed_at"]),
            # The planner's sticky rule (the last release or refusal of each pool EIP) read from the index
            # alone, whatever the spec's history holds (see migration 0009).
            models.Index(fields=["eip", "launch_spec", "closed_at", "confirmed_at", "close_kind"],
                         name="assignment_eip_last_close"),
        ]


class Event(models.Model):
    """The append-only history. Names are copied in, so the record outlives the rows it mentions."""

    class Kind(models.TextChoices):
        ASSIGNED = EventKind.ASSIGNED
        RELEASED = EventKind.RELEASED
        REASSIGNED = EventKind.REASSIGNED
        ADOPTED = EventKind.ADOPTED
        TAINT_LIFTED = EventKind.TAINT_LIFTED
        POOL_EXHAUSTED = EventKind.POOL_EXHAUSTED
        CONFLICT = EventKind.CONFLICT
        ERROR = EventKind.ERROR
        POOL_LOW = EventKind.POOL_LOW
        EGRESS_NOT_VIA_EIP = EventKind.EGRESS_NOT_VIA_EIP
        POOL_JOINED = EventKind.POOL_JOINED
        POOL_LEFT = EventKind.POOL_LEFT
        SPEC_CREATED = EventKind.SPEC_CREATED
        SPEC_UPDATED = EventKind.SPEC_UPDATED
        SPEC_DISABLED = EventKind.SPEC_DISABLED
        SPEC_ENABLED = EventKind.SPEC_ENABLED
        SPEC_DELETED = EventKind.SPEC_DELETED
        CLUSTER_ADDED = EventKind.CLUSTER_ADDED
        CLUSTER_CHANGED = EventKind.CLUSTER_CHANGED
        CLUSTER_DELETED = EventKind.CLUSTER_DELETED
        TOKEN_CREATED = EventKind.TOKEN_CREATED
        TOKEN_REVOKED = EventKind.TOKEN_REVOKED
        ROLE_CHANGED = EventKind.ROLE_CHANGED

    timestamp = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    launch_spec = models.CharField(max_length=253, blank=True, default="")
    cluster = models.CharField(max_length=100, blank=True, default="")
    region = models.CharField(max_length=32, blank=True, default="")
    node = models.CharField(max_length=253, blank=True, default="")
    instance_id = models.CharField(max_length=32, blank=True, default="")
    public_ip = models.CharField(max_length=45, blank=True, default="")
    allocation_id = models.CharField(max_length=64, blank=True, default="")
    actor = models.CharField(max_length=ACTOR_MAX, default=SYSTEM_ACTOR)
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            models.Index(fields=["-timestamp", "-id"], name="event_time_desc"),
            models.Index(fields=["kind", "-timestamp"], name="event_kind_time"),
            models.Index(fields=["launch_spec", "-timestamp"], name="event_spec_time"),
            models.Index(fields=["allocation_id", "-timestamp"], name="event_eip_time"),
            # A node's page and the API's ?node= filter: its events, newest first.
            models.Index(fields=["cluster", "node", "-timestamp"], name="event_node_time"),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%dT%H:%M:%SZ} {self.kind} {self.public_ip} {self.node}"


class EventCount(models.Model):
    """How many Event rows there are of each kind, for /metrics and the overview.

    Kept by database triggers on the Event table (migration 0005), so that every insert and delete counts,
    whichever way it is made (the ORM, a bulk insert, COPY, the retention job), in the inserting
    transaction: counting a million-row history on every poll cost hundreds of milliseconds.
    """

    kind = models.CharField(max_length=20, primary_key=True)
    total = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.kind}: {self.total}"


class ReassignRequest(models.Model):
    """An operator's manual reassign, recorded before anything moves.

    The web only writes this row and enqueues the task; a worker (which holds the AWS and Kubernetes
    rights) makes the move and writes the outcome here, which the web shows. The operator stays the
    actor of every event of the move, however late it finishes.
    """

    class State(models.TextChoices):
        PENDING = "pending", "waiting for a worker"
        RUNNING = "running", "moving"
        DONE = "done", "moved"
        REFUSED = "refused", "refused"
        FAILED = "failed", "failed"

    eip = models.ForeignKey(ElasticIP, on_delete=models.CASCADE, related_name="reassign_requests")
    node_name = models.CharField(max_length=253)
    actor = models.CharField(max_length=ACTOR_MAX)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"], name="reassign_state_time")]

    def __str__(self) -> str:
        return f"{self.eip_id} → {self.node_name} by {self.actor}: {self.state}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.REFUSED, self.State.FAILED)


class ApiToken(models.Model):
    """A per-user REST API token. Only a SHA-256 of the secret is stored; the secret is shown once.

    The token carries its user's groups: a viewer's token reads, an operator's token writes.
    """

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    # The first characters of the secret, kept in clear so that a listing can tell tokens apart.
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user_id})"


for _choices, _vocabulary in ((Node.State, NodeState), (Assignment.CloseKind, CloseKind), (Event.Kind, EventKind)):
    _same_values(_choices, _vocabulary)
