"""Observing the world: the write half of the snapshot.

A pass reads AWS and Kubernetes here and writes what they said into the ElasticIP and Node rows; the read
half, which turns those rows into the planner's inputs, is pools/snapshot.py. The two halves are split by
package only because pools/ must not import the AWS and Kubernetes adapters: the web runs without them.

A read that fails ends the pass before anything is written outside, and is recorded once per episode.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from pools import selectors, services
from pools.alerts import Alert, alert_key
from pools.keys import EIP_LABEL
from pools.logs import log_fields
from pools.models import (
    Assignment,
    ElasticIP,
    Event,
    LaunchSpec,
    Node,
    RegionFacts,
    RegionSequence,
    SpecFence,
    UnmanagedAddress,
)
from pools.pool_rule import S, selects
from pools.vocabulary import GONE_STATE, UNKNOWN_STATE

from . import readings
from .ec2 import Address, Ec2, Ec2Error, Instance
from .kube import Kube, KubeError, KubeNode
from .kube import NotFound as KubeNotFound

log = logging.getLogger(__name__)
# The alert key of a pass that could not read AWS or Kubernetes: one `error` event per episode.
READ_ALERT = alert_key(Alert.READ_FAILED)
# PostgreSQL's deadlock_detected and serialization_failure: the database aborted a write to break a cycle.
RETRYABLE_SQLSTATES = ("40P01", "40001")
# How stale a listed, unchanged node's last_seen_at may get before a pass writes it.
LAST_SEEN_SECONDS = 60


@dataclass
class Quiet:
    """A pass's quiet check (refresh_snapshot): the fingerprint of what it read, and whether the snapshot write
    and the plan were skipped because nothing changed since the last pass that found nothing to do."""

    fingerprint: str = ""
    skipped: bool = False


def refresh_snapshot(spec: LaunchSpec, ec2: Ec2, kube: Kube, *, read_errors: list[str] | None = None,
                     fenced: Callable[[], AbstractContextManager[None]] = transaction.atomic,
                     quiet: Quiet | None = None) -> list[Address]:
    """Write what AWS and Kubernetes say now into ElasticIP and Node rows; return this pass's pool.

    The planner takes the pool from the returned list, not from the ElasticIP rows: another spec's pass
    in the same region rewrites those rows under its own lock, possibly with an older observation.

    read_errors: when given, a node whose pods cannot be listed (a 403, a timeout) is recorded there with
    an unknown pod count, which keeps its EIP, and the rest of the pass goes on. Without it, that raises.
    fenced: the transaction the writes go in (the pass's fenced one: a stale holder writes no snapshot).

    A steady pass is cheap: the region's DescribeAddresses is shared by the passes of its specs
    (workers/readings.py), DescribeInstances is asked only about instances whose facts are not known or
    may have changed (`_needs_describe`), and only the rows that changed are written.

    quiet: when given, a pass whose reading, node list and spec are what the last pass that had nothing to do saw
    (`quiet_fingerprint`), with no claim open and no instance due for its recheck, writes no snapshot (last_seen_at
    aside) and says so in `quiet.skipped`: its plan would be that pass's, empty.
    """
    snap = _Snapshot(spec=spec, now=timezone.now(), fenced=fenced)
    _list_matching(snap, kube)
    with _describing_ahead(snap, ec2) as describe:
        pool = _read_region(snap, ec2)
        _read_tied(snap, kube)
        if quiet is not None:
            quiet.fingerprint = quiet_fingerprint(snap)
            if _still_quiet(snap, quiet.fingerprint):
                quiet.skipped = True
                with fenced():
                    _seen_again(snap)
                return pool
        _load_rows(snap)
        instances = describe(_to_describe(snap))

    def pods_on(name: str) -> int | None:
        try:
            return kube.workload_pod_count(name)
        except KubeError as exc:
            if read_errors is None:
                raise
            read_errors.append(f"list the pods of {name}: {type(exc).__name__}: {exc}")
            return None  # not counted: the node keeps its EIP (I2)

    with fenced():
        _write_nodes(snap, instances, pods_on)
        _write_gone(snap, instances)
    return pool


@dataclass
class _Snapshot:
    """One pass's observation, filled part by part by the functions below."""

    spec: LaunchSpec
    now: datetime
    fenced: Callable[[], AbstractContextManager[None]]
    addresses_digest: str = ""  # of the region's reading and its pool selectors (addresses_digest)
    pool_on: set[tuple[str | None, str | None]] = field(default_factory=set)  # (ENI, private IP) with a pool EIP
    others_on: set[tuple[str | None, str | None]] = field(default_factory=set)  # ... with a non-pool EIP
    listed: dict[str, KubeNode] = field(default_factory=dict)  # name -> the node, matching or tied
    matching: set[str] = field(default_factory=set)  # names whose labels are the spec's
    tied: set[str] = field(default_factory=set)  # names tied to the pool: an open claim, a pool EIP on the ENI
    known: dict[str, Node] = field(default_factory=dict)  # the rows of the listed and tied nodes
    gone: list[Node] = field(default_factory=list)  # rows Kubernetes no longer lists
    reuse: dict[str, Node] = field(default_factory=dict)  # rows whose instance facts stand without a describe


def _read_region(snap: _Snapshot, ec2: Ec2) -> list[Address]:
    """One DescribeAddresses for the region, unfiltered: it covers every spec's tag key, and it shows the
    non-pool EIPs that already sit on a node (associating over them would knock them off). A shared reading
    serves only if it was taken after this spec's last change to AWS (workers/readings.py)."""
    spec = snap.spec
    region = spec.cluster.region
    # Every spec of the region, disabled ones too: a draining spec's pool still selects its EIPs.
    region_specs = list(LaunchSpec.objects.filter(cluster__region=region).select_related("cluster"))
    selection = readings.selection_key([(s.pk, s.tag_key, s.tag_value) for s in region_specs])

    def save(found: list[Address], number: int) -> None:
        snap.addresses_digest = addresses_digest(found, selection)
        with snap.fenced():
            _save_addresses(region, found, timezone.now(), region_specs, number=number, digest=snap.addresses_digest)

    reading = readings.region_addresses(ec2, at_least=selectors.spec_fresh_from_seq(spec_id=spec.pk),
                                        selection=selection, save=save)
    if not reading.own and reading.saved_for != selection:
        save(reading.addresses, reading.number)  # written for another set of specs: this one's pool may lack rows
    if not snap.addresses_digest:  # another pass's reading, saved by it
        snap.addresses_digest = addresses_digest(reading.addresses, selection)
    pool = [a for a in reading.addresses if selects(spec, a.tags)]
    snap.pool_on = {(a.eni_id, a.private_ip) for a in pool if a.eni_id}
    snap.others_on = {(a.eni_id, a.private_ip) for a in reading.addresses if a.eni_id and not selects(spec, a.tags)}
    return pool


def _list_matching(snap: _Snapshot, kube: Kube) -> None:
    """The spec's nodes by label."""
    snap.listed = {n.name: n for n in kube.list_nodes(snap.spec.labels) if n.instance_id}
    snap.matching = set(snap.listed)


@contextmanager
def _describing_ahead(snap: _Snapshot, ec2: Ec2) -> Iterator[Callable[[set[str]], dict[str, Instance]]]:
    """DescribeInstances of the listed nodes the spec has no live row for on their instance (new nodes, a name back
    on another instance), sent in a thread of its own while this one reads the region's addresses: a burst's new
    nodes are known that much sooner (two round trips to EC2 at once instead of one after the other). Inside,
    `describe(ids)` gives the facts of exactly those ids: from that call, and from one more for the ids it did
    not cover (rows due for a recheck, tied or deleted nodes: known once the rows and the addresses are read).
    Only names and instance ids are read first (a steady pass at 5,000 nodes builds no row before its quiet
    check); only EC2 is read in the thread (the database stays in this one); its error is raised by `describe`,
    as a call made here would raise it."""
    spec = snap.spec
    rows = dict(Node.objects.filter(cluster=spec.cluster, launch_spec=spec, deleted_at__isnull=True)
                .values_list("name", "instance_id"))
    ahead = {instance_id for name, kn in snap.listed.items()
             if (instance_id := kn.instance_id) and rows.get(name) != instance_id}
    if not ahead:
        yield lambda ids: ec2.describe_instances(ids) if ids else {}
        return
    with ThreadPoolExecutor(1, thread_name_prefix="observe") as thread:
        described = thread.submit(contextvars.copy_context().run, ec2.describe_instances, ahead)

        def describe(ids: set[str]) -> dict[str, Instance]:
            found = described.result()
            if ids - ahead:
                found = {**found, **ec2.describe_instances(ids - ahead)}
            return {instance_id: found[instance_id] for instance_id in ids if instance_id in found}

        yield describe


def _read_tied(snap: _Snapshot, kube: Kube) -> None:
    """The nodes tied to the pool although their labels do not (or no longer) match: an open claim, or a pool
    EIP on their ENI. They must be followed until they give the EIP back."""
    spec = snap.spec
    snap.tied = set(
        Assignment.objects.filter(closed_at__isnull=True, launch_spec=spec).values_list("node__name", flat=True)
    ) | set(Node.objects.filter(cluster=spec.cluster, eni_id__in={eni for eni, _ in snap.pool_on})
            .values_list("name", flat=True))
    for name in sorted(snap.tied - snap.listed.keys()):
        try:
            found = kube.get_node(name)
        except KubeNotFound:
            continue
        if found.instance_id:
            snap.listed[name] = found


# ---- the quiet pass: nothing changed since the last pass that had nothing to do


def quiet_fingerprint(snap: _Snapshot) -> str:
    """What a pass plans from, outside its own rows, in one digest: the spec's selector, labels and settings, the
    region's specs (their selectors), every address of the region's reading with its tags and association, and
    every node listed or tied, as eipdash observes it (its resourceVersion aside: status heartbeats move it).
    "" when a node is on its way out, unreachable, or tied to the pool without matching the spec: such a pass
    always looks again (its pods, its instance)."""
    spec = snap.spec
    if snap.tied - snap.matching or any(kn.draining or kn.unreachable for kn in snap.listed.values()):
        return ""
    seen = [spec.pk, spec.cluster_id, spec.labels, spec.tag_key, spec.tag_value, spec.enabled, spec.min_free,
            settings.EIPDASH_STARTUP_TAINT, snap.addresses_digest, sorted(snap.tied), sorted(snap.matching)]
    digest = hashlib.sha256(json.dumps(seen, separators=(",", ":"), sort_keys=True).encode())
    for _, kn in sorted(snap.listed.items()):
        digest.update(b"\n" + kn.observed.encode())
    return digest.hexdigest()


def addresses_digest(addresses: list[Address], selection: str) -> str:
    """A reading in one digest: every address of the region with its tags and association, and the region's
    specs and their tag selectors (readings.selection_key: which rows are pool rows)."""
    digest = hashlib.sha256(selection.encode())
    for a in sorted(addresses, key=lambda a: a.allocation_id):
        digest.update(b"\n" + a.observed.encode())
    return digest.hexdigest()


def _still_quiet(snap: _Snapshot, fingerprint: str) -> bool:
    """The last pass of the spec that had nothing to do saw the same (its fingerprint is kept until a pass with
    something to do, or a read error, clears it), no claim of the spec waits for its confirmation, and no row is
    one a pass would ask DescribeInstances about (`_needs_describe`): facts incomplete (an instance that EC2 did not
    show with its ENI yet), an instance not plainly running, or facts due for their recheck. A spot interruption can
    leave a node listed and Ready while its instance is gone: EIPDASH_INSTANCE_RECHECK_SECONDS bounds how long a
    quiet spec takes to see it, and so a full pass (every row written again) comes at least that often."""
    kept = SpecFence.objects.filter(spec_id=snap.spec.pk).values_list("quiet_fingerprint", flat=True).first()
    if not fingerprint or fingerprint != kept:
        return False
    recheck_before = snap.now - timedelta(seconds=settings.EIPDASH_INSTANCE_RECHECK_SECONDS)
    due = (Node.objects.filter(cluster=snap.spec.cluster, launch_spec=snap.spec, deleted_at__isnull=True)
           .filter(Q(instance_checked_at__isnull=True) | Q(instance_checked_at__lt=recheck_before) | Q(eni_id="")
                   | Q(private_ip="") | ~Q(instance_state="running")).exists())
    unconfirmed = Assignment.objects.filter(launch_spec=snap.spec, closed_at__isnull=True, confirmed_at__isnull=True)
    return not due and not unconfirmed.exists()


def _seen_again(snap: _Snapshot) -> None:
    """A quiet pass writes only what moves with time: last_seen_at, once a minute (as _write_nodes does)."""
    seen_before = snap.now - timedelta(seconds=LAST_SEEN_SECONDS)
    Node.objects.filter(cluster=snap.spec.cluster, launch_spec=snap.spec, deleted_at__isnull=True,
                        last_seen_at__lt=seen_before).update(last_seen_at=snap.now)


def _load_rows(snap: _Snapshot) -> None:
    """The spec's live rows in one query, then by name only the few others (new nodes, tied ones): no query
    lists every node name."""
    spec, listed, tied = snap.spec, snap.listed, snap.tied
    wanted = listed.keys() | tied
    own = {row.name: row for row in Node.objects.filter(cluster=spec.cluster, launch_spec=spec,
                                                        deleted_at__isnull=True)}
    missing = wanted - own.keys()
    others = {row.name: row for row in Node.objects.filter(cluster=spec.cluster, name__in=missing)} if missing else {}
    snap.known = {name: row for name, row in own.items() if name in wanted} | others
    # Nodes that Kubernetes no longer lists: deleted (their instance state still matters).
    snap.gone = [row for name, row in own.items() if name not in listed] + [
        row for name, row in others.items() if name in tied and name not in listed and row.deleted_at is None]
    recheck_before = snap.now - timedelta(seconds=settings.EIPDASH_INSTANCE_RECHECK_SECONDS)
    snap.reuse = {name: row for name, kn in listed.items()
                  if (row := snap.known.get(name)) is not None
                  and not _needs_describe(row, kn, name in snap.matching, recheck_before)}


def _to_describe(snap: _Snapshot) -> set[str]:
    """The instances this pass asks DescribeInstances about: the listed nodes whose row's facts cannot be reused,
    the tied nodes Kubernetes no longer lists, and the deleted ones."""
    listed, known = snap.listed, snap.known
    instance_ids = {kn.instance_id for name, kn in listed.items() if name not in snap.reuse and kn.instance_id} | {
        known[name].instance_id for name in snap.tied - listed.keys() if name in known
    } | {row.instance_id for row in snap.gone}
    instance_ids.discard("")
    return instance_ids


def _write_nodes(snap: _Snapshot, instances: dict[str, Instance], pods_on: Callable[[str], int | None]) -> None:
    """The listed nodes' rows: only those whose observed columns changed are written."""
    rows: dict[bool, list[Node]] = {True: [], False: []}
    fields: list[str] = []
    unchanged: list[int] = []
    seen_before = snap.now - timedelta(seconds=LAST_SEEN_SECONDS)
    for name, kn in snap.listed.items():
        previous = snap.known.get(name)
        observed = _observed_node(snap, kn, previous, instances, pods_on)
        fields = [*observed, "last_seen_at"]
        is_matching = name in snap.matching
        if (previous is not None and (not is_matching or previous.launch_spec_id == snap.spec.pk)
                and all(getattr(previous, column) == value for column, value in observed.items())):
            # Nothing changed. last_seen_at only serves the retention of deleted nodes (days): it moves once a
            # minute, not on every pass.
            if previous.last_seen_at < seen_before:
                unchanged.append(previous.pk)
            continue
        rows[is_matching].append(Node(cluster=snap.spec.cluster, name=name, launch_spec=snap.spec,
                                      first_seen_at=snap.now, last_seen_at=snap.now, **observed))
    # A tied node keeps the launch spec it belongs to by its labels; only matching nodes join this one.
    for is_matching, batch in rows.items():
        if batch:
            batch.sort(key=lambda row: row.name)  # one lock order for every pass that writes these rows
            Node.objects.bulk_create(batch, update_conflicts=True, unique_fields=["cluster", "name"],
                                     update_fields=fields + (["launch_spec"] if is_matching else []))
    for chunk in _chunks(unchanged, 2000):
        Node.objects.filter(pk__in=chunk).update(last_seen_at=snap.now)
    # A name that came back on another instance (EKS ip-… names are reused) is a new node.
    reborn = [name for name, kn in snap.listed.items()
              if name in snap.known and snap.known[name].instance_id != kn.instance_id]
    if reborn:
        Node.objects.filter(cluster=snap.spec.cluster, name__in=reborn).update(first_seen_at=snap.now,
                                                                               eip_ready_at=None)


def _instance_facts(snap: _Snapshot, kn: KubeNode, previous: Node | None, instances: dict[str, Instance]
                    ) -> tuple[str, str, str, str, datetime | None]:
    """The node's instance state, primary ENI, private IP, subnet, and when DescribeInstances said so."""
    cached = snap.reuse.get(kn.name)
    if cached is not None:
        # The row's facts, confirmed by DescribeInstances less than EIPDASH_INSTANCE_RECHECK_SECONDS ago.
        return (cached.instance_state, cached.eni_id, cached.private_ip, cached.subnet_id,
                cached.instance_checked_at)
    instance = instances.get(kn.instance_id or "")
    # DescribeInstances may not show a new instance's ENI yet. The last known ENI is only a fallback for the
    # same instance: a reused node name (EKS ip-… names) must never inherit the ENI and private IP of the
    # instance that had the name before.
    fallback = previous if previous is not None and previous.instance_id == kn.instance_id else None
    if instance is None:
        # The node is still there but EC2 does not list its instance (eventual consistency right after a
        # launch): unknown, which neither gets an EIP nor gives one back.
        return (UNKNOWN_STATE, fallback.eni_id if fallback else "", fallback.private_ip if fallback else "",
                fallback.subnet_id if fallback else "", None)
    return (instance.state,
            instance.eni_id or (fallback.eni_id if fallback else ""),
            instance.private_ip or (fallback.private_ip if fallback else ""),
            instance.subnet_id or (fallback.subnet_id if fallback else ""),
            snap.now)


def _observed_node(snap: _Snapshot, kn: KubeNode, previous: Node | None, instances: dict[str, Instance],
                   pods_on: Callable[[str], int | None]) -> dict[str, Any]:
    """Every column this pass observes of one node: the same mapping builds the new row and names the columns
    an existing row gets updated, so that a column added here can never be left stale."""
    state, eni_id, private_ip, subnet_id, checked_at = _instance_facts(snap, kn, previous, instances)
    holds = (eni_id, private_ip) in snap.pool_on or kn.name in snap.tied
    return dict(
        instance_id=kn.instance_id or "",
        az=kn.az,
        labels=kn.labels,
        instance_state=state,
        eni_id=eni_id or "",
        private_ip=private_ip or "",
        subnet_id=subnet_id or "",
        instance_checked_at=checked_at,
        startup_tainted=kn.has_taint(settings.EIPDASH_STARTUP_TAINT),
        draining=kn.draining,
        drain_reason=kn.drain_reason,
        foreign_eip=(eni_id, private_ip) in snap.others_on,
        eip_label=kn.labels.get(EIP_LABEL, ""),
        # Pods are counted only where the answer decides something: a draining node holding an EIP.
        workload_pods=pods_on(kn.name) if kn.draining and holds else None,
        deleted_at=None,
    )


def _write_gone(snap: _Snapshot, instances: dict[str, Instance]) -> None:
    for row in snap.gone:
        row.deleted_at = snap.now
        instance = instances.get(row.instance_id)
        row.instance_state = instance.state if instance else GONE_STATE
        row.instance_checked_at = snap.now if instance else row.instance_checked_at
        row.save(update_fields=["deleted_at", "instance_state", "instance_checked_at"])
    for name in snap.tied - snap.listed.keys():
        deleted = snap.known.get(name)
        if deleted is not None and deleted.deleted_at is not None and deleted not in snap.gone:
            instance = instances.get(deleted.instance_id)
            Node.objects.filter(pk=deleted.pk).update(instance_state=instance.state if instance else GONE_STATE,
                                                      instance_checked_at=snap.now if instance else None)


def _needs_describe(row: Node, kn: KubeNode, matching: bool, recheck_before: datetime) -> bool:
    """Whether this pass must ask DescribeInstances about the node's instance, rather than reuse the facts
    of its row: a new instance (or a name reused by another one), facts not yet complete, an instance that
    is not plainly running, a node on its way out, NotReady or unreachable (a spot interruption leaves the
    node listed while its instance is gone), tied to the pool without matching, or facts older than
    EIPDASH_INSTANCE_RECHECK_SECONDS."""
    return (row.instance_id != (kn.instance_id or "") or row.deleted_at is not None
            or not row.eni_id or not row.private_ip or row.instance_state != "running"
            or kn.draining or kn.unreachable or not matching
            or row.instance_checked_at is None or row.instance_checked_at < recheck_before)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _address_observed(region: str, a: Address) -> dict[str, object]:
    """Every ElasticIP column a pass observes (last_seen_at aside): it builds the new row and names the
    columns an existing row gets updated, so that a column added here can never be left stale."""
    return dict(
        region=region,
        public_ip=a.public_ip,
        tags=a.tags,
        association_id=a.association_id or "",
        instance_id=a.instance_id or "",
        eni_id=a.eni_id or "",
        private_ip=a.private_ip or "",
        public_ipv4_pool=a.public_ipv4_pool,
        gone=False,
    )


def _save_addresses(region: str, addresses: list[Address], now: datetime, region_specs: list[LaunchSpec], *,
                    number: int, digest: str = "") -> None:
    """The region's reading into ElasticIP (the addresses some spec of the region selects) and
    UnmanagedAddress (the others). Only the rows that changed are written; last_seen_at moves for all of
    them in one UPDATE per table. No query lists every address of the region: the rows are read by region.

    number: the reading's (workers/readings.py). Two passes of a region can read at once and save in either
    order; a reading older than one already saved writes nothing, or the rows would step back and the next
    save would record EIPs leaving and joining their pools that never did. The region's first saved reading
    is the pools' baseline: it records no pool_joined (installing eipdash is not every address joining).

    digest: the reading's (addresses_digest). When the rows were last written in full from an equal reading and no
    row was written since (RegionSequence.addresses_written), only last_seen_at moves: a steady region's save costs
    two UPDATEs, not a read and a compare of every row."""
    with transaction.atomic():
        # The region's facts row first (created with the reading's number): every save of the region locks it
        # before its address rows, so saves are serialised, in one lock order, even where no row exists yet.
        RegionFacts.objects.get_or_create(region=region)
        saved, *kept = (RegionFacts.objects.select_for_update().filter(region=region)
                        .values_list("addresses_saved", "addresses_digest", "addresses_written").get())
        if number < saved:
            log.info("%s: reading %d not saved: reading %d, newer, already was", region, number, saved)
            return
        # The passes of a region's specs run at once and write the same rows. Taking the region's rows in
        # allocation id order first (as a pass's slices write them, workers/apply.py) makes a second pass
        # wait for the first; without it, one pass's upsert and another's region-wide UPDATE or records
        # lock rows in opposite orders, and PostgreSQL kills one of them as a deadlock (SQLite serialises
        # writers anyway, and ignores FOR UPDATE).
        for model in (ElasticIP, UnmanagedAddress):
            # NO KEY UPDATE: a claim's foreign-key check (KEY SHARE) on these rows is not held up.
            list(model.objects.filter(region=region).order_by("allocation_id").select_for_update(no_key=True)
                 .values_list("pk", flat=True))
        # Read under the rows' locks: a writer that wrote one of them has committed its bump by now.
        written = RegionSequence.objects.filter(region=region).values_list("addresses_written", flat=True).first()
        if digest and written is not None and [digest, written] == kept:
            ElasticIP.objects.filter(region=region, gone=False).update(last_seen_at=now)
            UnmanagedAddress.objects.filter(region=region).update(last_seen_at=now)
            RegionFacts.objects.filter(region=region).update(addresses_saved=max(number, saved))
            return
        _save_region_rows(region, addresses, now, region_specs, record_moves=saved > 0)
        RegionFacts.objects.filter(region=region).update(
            addresses_saved=max(number, saved), addresses_digest=digest if written is not None else "",
            addresses_written=written or 0)


def _save_region_rows(region: str, addresses: list[Address], now: datetime,
                      region_specs: list[LaunchSpec], *, record_moves: bool) -> None:
    selected = {a.allocation_id: _address_observed(region, a) for a in addresses
                if any(selects(s, a.tags) for s in region_specs)}
    live = _stored(ElasticIP.objects.filter(region=region, gone=False), _ADDRESS_COLUMNS)
    kept = _stored(UnmanagedAddress.objects.filter(region=region), _UNMANAGED_COLUMNS)
    # What the last reading saw, before this one overwrites it: the pools' audit trail compares the two.
    before = _seen_before(live, kept) if record_moves else None
    if returning := selected.keys() - live.keys():  # new to the pool, or back in it
        live |= _stored(ElasticIP.objects.filter(allocation_id__in=returning), _ADDRESS_COLUMNS)
    # first_seen_at only on insert: a row that comes back (retagged) keeps the time it was first seen.
    _upsert_changed(ElasticIP, live, selected, now, on_insert={"first_seen_at": now})
    if left := [allocation_id for allocation_id in live if allocation_id not in selected]:
        ElasticIP.objects.filter(allocation_id__in=left, gone=False).update(gone=True)
    ElasticIP.objects.filter(region=region, gone=False).update(last_seen_at=now)
    # Addresses no spec of the region selects: only for the inventory (never read by a pass or a claim).
    unmanaged = {a.allocation_id: _unmanaged_observed(region, a) for a in addresses
                 if a.allocation_id not in selected}
    if stale := kept.keys() - unmanaged.keys():
        UnmanagedAddress.objects.filter(allocation_id__in=stale).delete()
    _upsert_changed(UnmanagedAddress, kept, unmanaged, now)
    if unmanaged:
        UnmanagedAddress.objects.filter(region=region).update(last_seen_at=now)
    if before is not None:
        after = {a.allocation_id: Seen(a.public_ip, a.tags) for a in addresses}
        _record_pool_moves(region, pool_moves(region_specs, before, after), now)


# ---- the pools' audit trail: which EIPs EC2 put into a pool or took out of it


@dataclass(frozen=True)
class Seen:
    """One address as a reading showed it, as far as pool membership goes."""

    public_ip: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class PoolMove:
    """An EIP that entered (joined) or left a spec's pool between two readings of its region."""

    joined: bool
    allocation_id: str
    public_ip: str
    reason: str


LEFT_UNTAGGED = "untagged: its tags no longer select the pool"
LEFT_RELEASED = "released from the account"
JOINED_ALLOCATED = "allocated with the pool's tag"


def pool_moves(specs: Sequence[S], before: Mapping[str, Seen],
               after: Mapping[str, Seen]) -> list[tuple[S, PoolMove]]:
    """Pure: the EIPs each spec's pool gained and lost from the `before` reading to the `after` one. Both
    sides are judged by the same (current) selectors, so a selector edit moves nothing here: only tags
    changed in EC2, allocations and releases do. An EIP retagged from one pool to another leaves the first
    and joins the second; every leave comes before every join."""
    left: list[tuple[S, PoolMove]] = []
    joined: list[tuple[S, PoolMove]] = []
    for spec in specs:
        was = {aid for aid, seen in before.items() if selects(spec, seen.tags)}
        now = {aid for aid, seen in after.items() if selects(spec, seen.tags)}
        left += [(spec, PoolMove(False, aid, before[aid].public_ip, LEFT_UNTAGGED if aid in after else LEFT_RELEASED))
                 for aid in sorted(was - now)]
        joined += [(spec, PoolMove(True, aid, after[aid].public_ip,
                                   _tagged(spec.tag_key, after[aid].tags) if aid in before else JOINED_ALLOCATED))
                   for aid in sorted(now - was)]
    return left + joined


def _tagged(tag_key: str, tags: Mapping[str, str]) -> str:
    value = tags.get(tag_key, "")
    return f"tagged {tag_key}={value}" if value else f"tagged {tag_key}"


def _seen_before(live: dict[str, tuple[object, ...]], kept: dict[str, tuple[object, ...]]) -> dict[str, Seen]:
    """The region's addresses as the stored rows have them: the live pool rows and the unmanaged ones (a gone
    pool row's tags are those it had when it left, not what EC2 says now)."""
    seen: dict[str, Seen] = {}
    for stored, columns in ((kept, _UNMANAGED_COLUMNS), (live, _ADDRESS_COLUMNS)):
        ip, tags = columns.index("public_ip"), columns.index("tags")
        seen |= {aid: Seen(str(row[ip]), cast("Mapping[str, str]", row[tags] or {})) for aid, row in stored.items()}
    return seen


def _record_pool_moves(region: str, moves: list[tuple[LaunchSpec, PoolMove]], now: datetime) -> None:
    # In the reading's transaction, under the region's row locks: two passes saving the same reading
    # never both record a move (the second one finds the rows already written).
    for spec, move in moves:
        context = dataclasses.replace(services.event_context(spec=spec), region=region,
                                      public_ip=move.public_ip, allocation_id=move.allocation_id)
        services.event_record(kind=Event.Kind.POOL_JOINED if move.joined else Event.Kind.POOL_LEFT,
                              context=context, reason=move.reason, at=now)


def _unmanaged_observed(region: str, a: Address) -> dict[str, object]:
    columns = _address_observed(region, a)
    del columns["gone"]
    return columns


# The columns a reading writes, in the order of the mappings above (compared with the stored rows).
_PROBE = Address(allocation_id="", public_ip="", tags={}, association_id=None, eni_id=None, private_ip=None,
                 instance_id=None)
_ADDRESS_COLUMNS = tuple(_address_observed("", _PROBE))
_UNMANAGED_COLUMNS = tuple(_unmanaged_observed("", _PROBE))


def _stored(rows: QuerySet[Any], columns: tuple[str, ...]) -> dict[str, tuple[object, ...]]:
    return {row[0]: tuple(row[1:]) for row in rows.values_list("allocation_id", *columns)}


def _upsert_changed(model: Any, stored: dict[str, tuple[object, ...]], observed: dict[str, dict[str, object]],
                    now: datetime, *, on_insert: dict[str, object] | None = None) -> None:
    """Write the rows whose observed columns differ from `stored` (or that are not there yet). An
    allocation id is unique across regions: a row found under another region is replaced, not duplicated.
    on_insert: columns a new row gets and an existing one keeps (they are not updated on conflict)."""
    changed = [model(allocation_id=allocation_id, last_seen_at=now, **values, **(on_insert or {}))
               for allocation_id, values in sorted(observed.items())  # one lock order for every pass
               if stored.get(allocation_id) != tuple(values.values())]
    if changed:
        columns = list(next(iter(observed.values())))
        model.objects.bulk_create(changed, update_conflicts=True, unique_fields=["allocation_id"],
                                  update_fields=[*columns, "last_seen_at"])


def error_text(what: str, exc: Exception) -> str:
    code = getattr(exc, "code", "")
    return f"{what}: {type(exc).__name__}{f' ({code})' if code else ''}: {exc}"


@dataclass
class Observation:
    """What refresh_snapshot gave a pass: the pool, or None when AWS or Kubernetes could not be read."""

    pool: list[Address] | None
    read_errors: list[str]
    quiet: Quiet = field(default_factory=Quiet)


def observe(spec: LaunchSpec, ec2: Ec2, kube: Kube, *, record: bool = True,
            fenced: Callable[[], AbstractContextManager[None]] = transaction.atomic) -> Observation:
    """refresh_snapshot for a pass. A read that fails (UnauthorizedOperation, throttling, a 403 on nodes)
    ends the pass; it is recorded as one `error` event per episode (like pool_exhausted), the pass time
    is kept in last_reconciled_at, and last_successful_pass_at stays where it was. Every write goes in a
    `fenced` transaction (the pass's: a holder that lost its spec writes nothing)."""
    read_errors: list[str] = []
    quiet = Quiet()
    try:
        pool = refresh_snapshot(spec, ec2, kube, read_errors=read_errors, fenced=fenced,
                                quiet=quiet if record else None)
    except (Ec2Error, KubeError) as exc:
        read_errors.append(error_text("read AWS and Kubernetes", exc))
        log.warning("%s: %s", spec.name, read_errors[-1], extra=log_fields(spec=spec.name))
        if record:
            with fenced():
                _record_read_failure(spec, read_errors, pass_ended=True)
        return Observation(None, read_errors)
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) not in RETRYABLE_SQLSTATES:
            raise
        # Another pass wrote the same snapshot rows at the same moment and PostgreSQL aborted this write
        # (a deadlock or a serialisation failure). Nothing outside has been touched yet: this pass ends,
        # and the next one starts over from the world as it is.
        read_errors.append(error_text("write the snapshot", exc))
        log.warning("%s: %s", spec.name, read_errors[-1], extra=log_fields(spec=spec.name))
        return Observation(None, read_errors)
    if read_errors and record:
        with fenced():
            _record_read_failure(spec, read_errors, pass_ended=False)
    return Observation(pool, read_errors, quiet)


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

