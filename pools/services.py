"""Writes to the record. Every change of the history goes through here, whoever makes it (a worker, the web,
a command): how a claim opens, confirms and closes and how an event is written is decided in one place, so
that the database constraints behind I3 and the append-only history hold for every writer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from . import audit, metrics
from .counters import next_value
from .drain import drain_holds
from .kubeconfigs import kubeconfig_identity, kubeconfig_problem  # the kubeconfig rules live there
from .locks import spec_lock
from .logs import log_fields
from .models import (
    SYSTEM_ACTOR,
    Assignment,
    Cluster,
    ElasticIP,
    Event,
    LaunchSpec,
    Node,
    ReassignRequest,
    RegionFacts,
    RegionSequence,
    SpecPlan,
    UnmanagedAddress,
)
from .planner import Claim, EipView, NodeView, Plan
from .pool_rule import PoolSelector, RegionAddress, in_pool, labels_text, pool_changes
from .regions import KNOWN_REGIONS
from .specfile import (
    LaunchSpecInput,
    SpecFileError,
    cluster_name_problem,
    kube_context_problem,
    parse_launch_spec,
)


def default_region() -> str:
    return str(settings.EIPDASH_CLUSTER_REGION)


def cluster_default(*, actor: str = SYSTEM_ACTOR) -> Cluster:
    """The cluster specs join when they name none, made on first use: its making is a `cluster_added` event
    with the actor whose change made it (it points the workers at EIPDASH_KUBE_CONTEXT)."""
    with transaction.atomic():
        cluster, created = Cluster.objects.get_or_create(
            name=settings.EIPDASH_CLUSTER_NAME,
            defaults={"region": default_region(), "kube_context": settings.EIPDASH_KUBE_CONTEXT},
        )
        if created:
            cluster_audit(name=cluster.name, before=None, after=cluster, actor=actor)
    return cluster


def _cluster_for(data: LaunchSpecInput, clusters: ClusterCache | None = None, *,
                 actor: str = SYSTEM_ACTOR) -> Cluster:
    """The spec's cluster. Only the configured default cluster is created on demand: a mistyped name
    would otherwise make a second row on the same kubeconfig, and two specs would fight over one node."""
    return (clusters.check(data) if clusters is not None else _cluster_check(data)) or cluster_default(actor=actor)


class ClusterCache:
    """`_cluster_check` answers by (cluster, region), looked up once per sync: a sync of many documents
    naming a few clusters makes a few queries, not two per document."""

    def __init__(self) -> None:
        self._found: dict[tuple[str | None, str | None], Cluster | None | SpecFileError] = {}

    def check(self, data: LaunchSpecInput) -> Cluster | None:
        key = (data.cluster, data.region)
        if key not in self._found:
            try:
                self._found[key] = _cluster_check(data)
            except SpecFileError as exc:
                self._found[key] = exc
        found = self._found[key]
        if isinstance(found, SpecFileError):
            raise SpecFileError(list(found.messages))
        return found


def _cluster_check(data: LaunchSpecInput) -> Cluster | None:
    """The spec's cluster without writing anything: None when it is the default cluster, not made yet
    (`cluster_default` makes it). Raises SpecFileError for a cluster that is not configured."""
    cluster: Cluster | None
    if data.cluster is None or data.cluster == settings.EIPDASH_CLUSTER_NAME:
        cluster = Cluster.objects.filter(name=settings.EIPDASH_CLUSTER_NAME).first()
        if cluster is None:
            # Made on demand, the default row must not land on a kube context another row already manages.
            other = Cluster.objects.filter(
                kube_context=settings.EIPDASH_KUBE_CONTEXT, kubeconfig=""
            ).first()
            if other is not None:
                raise SpecFileError(
                    [f"the default cluster {settings.EIPDASH_CLUSTER_NAME!r} would manage the same kube context "
                     f"as cluster {other.name!r}: name \"cluster\": \"{other.name}\" in the spec"]
                )
            region = data.region
            if region is not None and region != default_region():
                raise SpecFileError(
                    [f"region {region!r} differs from cluster {settings.EIPDASH_CLUSTER_NAME!r}'s region "
                     f"{default_region()!r}"]
                )
            return None
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


def cluster_problems(
    *, name: str, region: str, kube_context: str, kubeconfig: str = "", exclude_pk: int | None = None
) -> list[str]:
    """Why a cluster row may not be saved. Shared by the admin and `manage.py cluster add`.

    Two rows on one kube context of one kubeconfig are one cluster under two names: specs in each would claim
    the same nodes.
    """
    problems = [
        problem
        for problem in (cluster_name_problem(name), kube_context_problem(kube_context),
                        kubeconfig_problem(kubeconfig))
        if problem is not None
    ]
    if region not in KNOWN_REGIONS:
        problems.append(f"region {region!r} is not a known AWS region")
    others = Cluster.objects.filter(kube_context=kube_context).order_by("name")
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    # By the files' real paths: a symlink or a "..", like a second spelling, is the same kubeconfig.
    mine = kubeconfig_identity(kubeconfig)
    if (other := next((row for row in others if kubeconfig_identity(row.kubeconfig) == mine), None)) is not None:
        where = f"kube context {kube_context!r}" if kube_context else "the current kube context"
        where += f" of kubeconfig {kubeconfig}" if kubeconfig else ""
        problems.append(f"cluster {other.name!r} already uses {where}: two rows would manage the same nodes")
    return problems


def cluster_create(*, name: str, region: str, kube_context: str = "", kubeconfig: str = "",
                   actor: str = SYSTEM_ACTOR) -> Cluster:
    with transaction.atomic():
        if Cluster.objects.filter(name=name).exists():
            raise ClusterError(f"cluster {name!r} exists")
        problems = cluster_problems(name=name, region=region, kube_context=kube_context, kubeconfig=kubeconfig)
        if problems:
            raise ClusterError("; ".join(problems))
        cluster = Cluster.objects.create(name=name, region=region, kube_context=kube_context, kubeconfig=kubeconfig)
        cluster_audit(name=name, before=None, after=cluster, actor=actor)
        return cluster


def cluster_state(cluster: Cluster | None) -> audit.ClusterState | None:
    if cluster is None:
        return None
    return audit.ClusterState(cluster.region, cluster.kube_context, cluster.kubeconfig, cluster.name)


def cluster_audit(*, name: str, before: Cluster | audit.ClusterState | None, after: Cluster | None, actor: str) -> None:
    """The history event of a cluster row added, changed or deleted (the admin, `manage.py cluster add`)."""
    was = before if isinstance(before, audit.ClusterState) or before is None else cluster_state(before)
    region = (after.region if after is not None else was.region if was is not None else "")
    for kind, reason in audit.cluster_events(name, was, cluster_state(after)):
        event_record(kind=kind, context=EventContext(cluster=name, region=region), reason=reason, actor=actor)


def user_role(user: AbstractBaseUser | None) -> str:
    """The user's role as it is in the database now (pools/audit.py's words); "(new)" for no user yet."""
    if user is None or user.pk is None:
        return "(new)"
    fresh = User.objects.filter(pk=user.pk).first()  # a new instance: no permission cache of an earlier read
    if fresh is None:
        return "(new)"
    groups = fresh.groups.values_list("name", flat=True)
    return audit.role_of(active=fresh.is_active, superuser=fresh.is_superuser, groups=groups,
                         permissions=fresh.get_all_permissions() if fresh.is_active else ())


def user_role_audit(*, user: AbstractBaseUser, before: str, actor: str, after: str | None = None) -> None:
    """The history event of a role change (the admin's user form, `manage.py ensure_admin`), if it changed;
    `after` "deleted" for an account the admin deleted."""
    found = audit.role_event(user.get_username(), before, after or user_role(user))
    if found is not None:
        event_record(kind=found[0], context=EventContext(), reason=found[1], actor=actor)


def group_audit(*, name: str, before: tuple[str, frozenset[str]] | None, after: tuple[str, frozenset[str]] | None,
                actor: str) -> None:
    """A group renamed, deleted, or given or denied permissions: every member's role changes with it."""
    if before == after:
        return
    if after is None:
        reason = f"group {name!r} deleted: its members lose what it gave them"
    elif before is None:
        reason = f"group {after[0]!r} added" + (f" with {', '.join(sorted(after[1]))}" if after[1] else "")
    else:
        changes = [f"renamed {before[0]!r} -> {after[0]!r}"] if before[0] != after[0] else []
        changes += [f"+ {p}" for p in sorted(after[1] - before[1])] + [f"- {p}" for p in sorted(before[1] - after[1])]
        reason = f"group {after[0]!r}: " + ", ".join(changes)
    event_record(kind=Event.Kind.ROLE_CHANGED, context=EventContext(), reason=reason, actor=actor)


def launch_spec_apply(*, data: LaunchSpecInput, actor: str = SYSTEM_ACTOR) -> tuple[LaunchSpec, bool]:
    """Create or update a launch spec by name. All or nothing: a refused input changes no row. What changed
    is an event of the history, with `actor` (pools/audit.py), in the same transaction.

    An update waits for the spec's running pass, so that no pass plans on half of an old selector.
    """
    existing = LaunchSpec.objects.filter(name=data.name).values_list("pk", flat=True).first()
    if existing is None:
        return _launch_spec_apply(data, actor=actor)
    with spec_lock(existing, wait_seconds=30) as acquired:
        if not acquired:
            raise SpecFileError([f"launch spec {data.name!r} is busy with a long pass; try again"])
        return _launch_spec_apply(data, actor=actor)


def spec_state(spec: LaunchSpec) -> audit.SpecState:
    return audit.SpecState(spec.cluster.name, labels_text(spec.labels), spec.tag_key, spec.tag_value, spec.enabled,
                           spec.min_free)


def _input_state(data: LaunchSpecInput, cluster_name: str) -> audit.SpecState:
    return audit.SpecState(cluster_name, labels_text(data.labels), data.tag_key, data.tag_value, data.enabled,
                           data.min_free)


def _spec_audit(spec: LaunchSpec, before: audit.SpecState | None, after: audit.SpecState | None, *, actor: str,
                why: str = "") -> None:
    context = event_context(spec=spec)
    for kind, reason in audit.spec_events(before, after, why=why):
        event_record(kind=kind, context=context, reason=reason, actor=actor)


@transaction.atomic
def _launch_spec_apply(data: LaunchSpecInput, clusters: ClusterCache | None = None, *,
                       actor: str = SYSTEM_ACTOR) -> tuple[LaunchSpec, bool]:
    cluster = _cluster_for(data, clusters, actor=actor)
    spec, created = LaunchSpec.objects.select_for_update().get_or_create(
        name=data.name,
        defaults={
            "cluster": cluster,
            "labels": data.labels,
            "tag_key": data.tag_key,
            "tag_value": data.tag_value,
            "enabled": data.enabled,
            "min_free": data.min_free,
        },
    )
    before = None if created else spec_state(spec)
    if not created:
        if spec.cluster_id != cluster.pk and spec.assignments.filter(closed_at__isnull=True).exists():
            raise SpecFileError([f"launch spec {spec.name!r} holds EIPs in cluster {spec.cluster.name!r}; "
                                 "release them before moving it to another cluster"])
        spec.cluster = cluster
        spec.labels = data.labels
        spec.tag_key = data.tag_key
        spec.tag_value = data.tag_value
        spec.enabled = data.enabled
        spec.min_free = data.min_free
        # The alerts were true of the old selector; the next pass works them out anew.
        spec.active_alerts = []
        spec.save()
    _spec_audit(spec, before, spec_state(spec), actor=actor)
    return spec, created


def tainted_waiting_count(spec: LaunchSpec) -> int:
    """The spec's live nodes still under the startup taint (not deleted, gone or released): only a pass of this
    spec ever lifts that taint, so they hold a spec as surely as an EIP does (an empty or exhausted pool
    holds no EIP while its nodes wait)."""
    live = spec.nodes.filter(startup_tainted=True, deleted_at__isnull=True)
    return live.exclude(state__in=[Node.State.GONE, Node.State.RELEASED]).count()


def launch_spec_delete_refusal(spec: LaunchSpec) -> str | None:
    """Why `spec` may not be deleted now, None when it may. The one rule of the CLI, the API, the page and
    prune: it holds no EIP, and no live node of it waits under the startup taint."""
    name = spec.name
    held = spec.assignments.filter(closed_at__isnull=True).count()
    if held:
        return f"launch spec {name!r} still holds {held} EIP(s); disable it and let its nodes drain first"
    waiting = tainted_waiting_count(spec)
    if waiting:
        return (f"launch spec {name!r} has {waiting} node(s) still waiting under the startup taint, and only this "
                "spec lifts that taint: give its pool free EIPs so they get one (then disable it and let them "
                "drain), or remove those nodes, first")
    return None


def launch_spec_disable(*, name: str, actor: str = SYSTEM_ACTOR) -> bool:
    """Disable and drain: the switch only, under the spec's lock, with its `spec_disabled` event. None of the
    other fields is validated again: an on-call engineer must be able to stop a spec whose old row holds a value
    today's rules refuse (Edit would refuse it). False when it was disabled already."""
    spec = LaunchSpec.objects.filter(name=name).first()
    if spec is None:
        raise LaunchSpec.DoesNotExist(f"no launch spec named {name!r}")
    with spec_lock(spec.pk, wait_seconds=30) as acquired:
        if not acquired:
            raise SpecFileError([f"launch spec {name!r} is busy with a long pass; try again"])
        with transaction.atomic():
            spec = LaunchSpec.objects.select_for_update().select_related("cluster").get(pk=spec.pk)
            if not spec.enabled:
                return False
            before = spec_state(spec)
            LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False, active_alerts=[], updated_at=timezone.now())
            spec.enabled = False
            _spec_audit(spec, before, spec_state(spec), actor=actor)
    return True


def launch_spec_delete(*, name: str, actor: str = SYSTEM_ACTOR) -> None:
    """Delete a spec. Refused while it holds EIPs (deleting would orphan live associations) or while any of
    its live nodes waits under the startup taint (nothing would ever lift it).

    Under the spec's lock: a pass that is opening a claim right now would otherwise slip past the check.
    """
    spec = LaunchSpec.objects.filter(name=name).first()
    if spec is None:
        raise LaunchSpec.DoesNotExist(f"no launch spec named {name!r}")
    with spec_lock(spec.pk, wait_seconds=30) as acquired:
        if not acquired:
            raise SpecFileError([f"launch spec {name!r} is busy with a long pass; try again"])
        _launch_spec_delete(spec, actor=actor)


@transaction.atomic
def _launch_spec_delete(spec: LaunchSpec, *, actor: str, why: str = "") -> None:
    if (refusal := launch_spec_delete_refusal(spec)) is not None:
        raise SpecFileError([refusal])
    _spec_audit(spec, spec_state(spec), None, actor=actor, why=why)
    spec.delete()


# The path of a change the sync's prune makes, in its events' reasons.
PRUNED = "pruned by a sync: no document names it"


# The most documents one sync takes: a GitOps folder holds tens of specs; thousands are a mistake or an abuse
# (the whole sync is checked in one web request, by any reader for a dry run).
SYNC_MAX_DOCUMENTS = 500

# The refusal of a prune with no document, for every caller (CLI, API): it would disable or delete every spec.
SYNC_EMPTY_PRUNE = ("no launch spec in the input: with prune that would disable or delete every launch spec, "
                    "never what a pipeline meant; nothing changed")


# The refusal of a prune whose scope is a cluster no document names: like an empty prune, it would disable or
# delete every spec of that cluster (a pipeline that pointed the wrong folder at it).
SYNC_FOREIGN_PRUNE = ("no document names cluster {cluster!r}, the scope of prune: that would disable or delete "
                      "every launch spec of {cluster!r}, never what a pipeline meant; nothing changed")


def _named_cluster(data: LaunchSpecInput) -> str:
    return data.cluster if data.cluster is not None else str(settings.EIPDASH_CLUSTER_NAME)


@dataclass
class SyncResult:
    """What `launch_spec_sync` did, or would do in a dry run. Lists hold spec names, sorted."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # --prune: present in the record (in the prune scope), absent from the documents, still holding EIPs or
    # with live nodes waiting under the startup taint: disabled now, they drain.
    disabled: list[str] = field(default_factory=list)
    # --prune: absent and holding nothing, no node waiting under the startup taint.
    deleted: list[str] = field(default_factory=list)
    # --prune: absent, already disabled and still holding EIPs (or tainted nodes): nothing to do yet, a later
    # prune deletes them.
    draining: list[str] = field(default_factory=list)
    # --prune: the clusters whose specs prune looks at (those the documents name, or the one asked for).
    prune_clusters: list[str] = field(default_factory=list)
    # Human-readable lines: "+ spec api", "~ spec web: tagValue 'a' -> 'b'", "- spec old".
    diff: list[str] = field(default_factory=list)
    # Every problem of every document, each prefixed by its source ("web.json: ...").
    problems: list[str] = field(default_factory=list)
    # True when the record now matches the documents: this call committed the changes, or there were none to
    # make. False for a dry run, and when refused (then nothing changed).
    applied: bool = False

    @property
    def changed(self) -> bool:
        """Anything created, updated, disabled or deleted (or that would be, in a dry run)."""
        return bool(self.created or self.updated or self.disabled or self.deleted)


def _spec_changes(spec: LaunchSpec, data: LaunchSpecInput, cluster_name: str) -> list[str]:
    """The fields of `spec` that `data` changes, as "field old -> new" in the document's own terms."""
    return audit.spec_changes(spec_state(spec), _input_state(data, cluster_name))


def pool_change_lines(data: LaunchSpecInput, current: LaunchSpec | None, clusters: ClusterCache | None = None,
                      seen: RegionAddresses | None = None) -> list[str]:
    """What applying `data` would do to the pool of `current` (None: a new spec), EIP by EIP, from the region's
    EIPs as the last passes saw them (pool_rule.pool_changes: the sync's diff, the import page's, the API's PUT).
    [] when its cluster is refused: that problem is said on its own."""
    try:
        cluster = clusters.check(data) if clusters is not None else _cluster_check(data)
    except SpecFileError:
        return []
    new = PoolSelector(cluster.region if cluster is not None else default_region(), data.tag_key, data.tag_value)
    old = PoolSelector(current.cluster.region, current.tag_key, current.tag_value) if current is not None else None
    if new == old:
        return []
    seen = seen or RegionAddresses()
    regions = sorted({new.region} | ({old.region} if old is not None else set()))
    return pool_changes(old, new, [a for region in regions for a in seen.of(region, current)])


class RegionAddresses:
    """The EIPs of a region as the last passes saw them, pool and unmanaged, with where each is now; read once
    per region (a sync of many documents asks for few regions)."""

    def __init__(self) -> None:
        # Per region: (address with "now" for an unmanaged one, its node, the specs whose pool selects it).
        self._found: dict[str, list[tuple[RegionAddress, str, list[LaunchSpec]]]] = {}

    def of(self, region: str, current: LaunchSpec | None) -> list[RegionAddress]:
        if region not in self._found:
            self._found[region] = self._read(region)
        addresses = []
        for address, node, owners in self._found[region]:
            if address.now:  # unmanaged
                addresses.append(address)
                continue
            others = [spec.name for spec in owners if current is None or spec.pk != current.pk]
            where = [f"in the pool of {', '.join(others)}"] if others else []
            where += [f"on node {node}"] if node else []
            addresses.append(replace(address, now=", ".join(where) or "free"))
        return addresses

    @staticmethod
    def _read(region: str) -> list[tuple[RegionAddress, str, list[LaunchSpec]]]:
        found: list[tuple[RegionAddress, str, list[LaunchSpec]]] = []
        for row in UnmanagedAddress.objects.filter(region=region):
            attached = row.instance_id or row.eni_id
            now = f"unmanaged, attached to {attached}" if attached else "unmanaged"
            found.append((RegionAddress(row.allocation_id, row.public_ip, region, row.tags, now), "", []))
        pool = list(ElasticIP.objects.filter(region=region, gone=False))
        if pool:
            nodes = dict(Assignment.objects.filter(closed_at__isnull=True, eip__region=region, eip__gone=False)
                         .values_list("eip_id", "node__name"))
            specs = list(LaunchSpec.objects.select_related("cluster").filter(cluster__region=region))
            for eip in pool:
                owners = [spec for spec in specs if in_pool(spec, region=region, tags=eip.tags)]
                found.append((RegionAddress(eip.allocation_id, eip.public_ip, region, eip.tags, ""),
                              nodes.get(eip.pk, ""), owners))
        return found


def _sync_plan(
    inputs: list[tuple[str, LaunchSpecInput]], *, prune: bool, result: SyncResult, clusters: ClusterCache,
    scope: str | None = None,
) -> list[tuple[str, LaunchSpecInput, LaunchSpec | None]]:
    """Fill `result` with what a sync would do, reading only. Returns the documents to write (with their
    current row, None to create); problems go to result.problems.

    Prune looks only at the specs of the cluster `scope`, or when it is None of the clusters the documents
    name: a folder per cluster must not prune the other clusters' specs."""
    writes: list[tuple[str, LaunchSpecInput, LaunchSpec | None]] = []
    existing = {spec.name: spec for spec in LaunchSpec.objects.select_related("cluster")}
    named_clusters: set[str] = set()
    seen = RegionAddresses()
    for source, data in inputs:
        try:
            cluster = clusters.check(data)
        except SpecFileError as exc:
            result.problems.extend(f"{source}: {message}" for message in exc.messages)
            continue
        cluster_name = cluster.name if cluster is not None else _named_cluster(data)
        named_clusters.add(cluster_name)
        spec = existing.get(data.name)
        if spec is None:
            result.created.append(data.name)
            result.diff.append(f"+ spec {data.name} (cluster {cluster_name}, pool "
                               f"{data.tag_key if data.tag_value is None else f'{data.tag_key}={data.tag_value}'})")
            result.diff.extend(f"  {line}" for line in pool_change_lines(data, None, clusters, seen))
            writes.append((source, data, None))
            continue
        changes = _spec_changes(spec, data, cluster_name)
        if not changes:
            result.unchanged.append(data.name)
            continue
        if spec.cluster.name != cluster_name and spec.assignments.filter(closed_at__isnull=True).exists():
            result.problems.append(f"{source}: launch spec {spec.name!r} holds EIPs in cluster "
                                   f"{spec.cluster.name!r}; release them before moving it to another cluster")
            continue
        result.updated.append(data.name)
        result.diff.append(f"~ spec {data.name}: " + ", ".join(changes))
        result.diff.extend(f"  {line}" for line in pool_change_lines(data, spec, clusters, seen))
        writes.append((source, data, spec))
    if prune:
        _plan_prune(inputs, existing, {scope} if scope is not None else named_clusters, result)
    return writes


def _plan_prune(inputs: list[tuple[str, LaunchSpecInput]], existing: dict[str, LaunchSpec], in_scope: set[str],
                result: SyncResult) -> None:
    """What a prune would do to the specs of `in_scope` that no document names: delete, disable or wait."""
    result.prune_clusters = sorted(in_scope)
    named = {data.name for _, data in inputs}
    for name, spec in sorted(existing.items()):
        if name in named or spec.cluster.name not in in_scope:
            continue
        held = spec.assignments.filter(closed_at__isnull=True).count()
        waiting = 0 if held else tainted_waiting_count(spec)
        if not held and not waiting:
            result.deleted.append(name)
            result.diff.append(f"- spec {name}: deleted (holds no EIP)")
        elif spec.enabled:
            result.disabled.append(name)
            why = (f"it drains its {held} EIP(s)" if held else
                   f"not deleted: {waiting} node(s) still wait under the startup taint, which only this spec "
                   "lifts")
            result.diff.append(f"- spec {name}: disabled, {why}; a later --prune deletes it once it holds "
                               "nothing")
        else:
            result.draining.append(name)


def _prune_scope_problem(cluster: str | None) -> str | None:
    if cluster is None:
        return None
    if (problem := cluster_name_problem(cluster)) is not None:
        return problem
    if not Cluster.objects.filter(name=cluster).exists() and cluster != settings.EIPDASH_CLUSTER_NAME:
        known = ", ".join(sorted(Cluster.objects.values_list("name", flat=True))) or "none"
        return f"unknown cluster {cluster!r} (known: {known}): prune scope must be a configured cluster"
    return None


def launch_spec_sync(
    *, documents: list[tuple[str, object]], prune: bool = False, dry_run: bool = False, actor: str = SYSTEM_ACTOR,
    cluster: str | None = None,
) -> SyncResult:
    """Make the launch specs what `documents` say: (source label, parsed JSON value in the `launchspec apply`
    Ocean shape) pairs. All or nothing, in one transaction: any problem in any document (or two documents
    naming the same spec) means problems are returned and nothing changes.

    `prune` disables the specs no document names while they hold EIPs or have nodes waiting under the
    startup taint (they drain) and deletes the others; it looks only at the specs of `cluster`, or when that
    is None of the clusters the documents name. A prune without any document is refused. `dry_run` only
    reports. Every spec that changes is locked first, so that no pass plans on half of an old selector, and
    is checked again under its lock.
    """
    result = SyncResult()
    if (refusal := _sync_refusal(documents, prune=prune, cluster=cluster)) is not None:
        result.problems.append(refusal)
        return result
    inputs = _sync_inputs(documents, result)
    if prune and cluster is not None and inputs and cluster not in {_named_cluster(data) for _, data in inputs}:
        result.problems.append(SYNC_FOREIGN_PRUNE.format(cluster=cluster))
        return result
    clusters = ClusterCache()
    # On with the valid documents even after a problem: every problem shows at once.
    _sync_plan(inputs, prune=prune, result=result, clusters=clusters, scope=cluster)
    if result.problems or dry_run or not result.changed:
        result.applied = not (result.problems or dry_run)
        _sort(result)
        return result
    touched = sorted(set(result.updated) | set(result.disabled) | set(result.deleted))
    ids = list(LaunchSpec.objects.filter(name__in=touched).order_by("pk").values_list("pk", flat=True))
    with ExitStack() as locks:
        for spec_id in ids:
            if not locks.enter_context(spec_lock(spec_id, wait_seconds=30)):
                name = LaunchSpec.objects.filter(pk=spec_id).values_list("name", flat=True).first()
                # Only the refusal: nothing was created or updated.
                return SyncResult(problems=[f"launch spec {name!r} is busy with a long pass; try again"])
        try:
            with transaction.atomic():
                # Again under the locks (and with fresh cluster rows): a pass may have opened a claim since.
                clusters = ClusterCache()
                again = SyncResult()
                writes = _sync_plan(inputs, prune=prune, result=again, clusters=clusters, scope=cluster)
                if again.problems:
                    raise SpecFileError(again.problems)
                for _source, data, _spec in writes:
                    _launch_spec_apply(data, clusters, actor=actor)
                for name in again.disabled:
                    spec = LaunchSpec.objects.select_for_update().select_related("cluster").get(name=name)
                    before = spec_state(spec)
                    LaunchSpec.objects.filter(pk=spec.pk).update(
                        enabled=False, active_alerts=[], updated_at=timezone.now()
                    )
                    spec.enabled = False
                    _spec_audit(spec, before, spec_state(spec), actor=actor, why=PRUNED)
                for name in again.deleted:
                    spec = LaunchSpec.objects.select_for_update().select_related("cluster").get(name=name)
                    _launch_spec_delete(spec, actor=actor, why=PRUNED)
        except SpecFileError as exc:
            return SyncResult(problems=list(exc.messages))
    again.applied = True
    _sort(again)
    _log.info("launch specs synced by %s: %d created, %d updated, %d disabled, %d deleted", actor,
              len(again.created), len(again.updated), len(again.disabled), len(again.deleted))
    return again


def _sync_refusal(documents: list[tuple[str, object]], *, prune: bool, cluster: str | None) -> str | None:
    """Why the whole sync is refused before any document is read, if it is."""
    if len(documents) > SYNC_MAX_DOCUMENTS:
        return f"{len(documents)} launch specs in one sync: at most {SYNC_MAX_DOCUMENTS}; nothing changed"
    if prune and not documents:
        return SYNC_EMPTY_PRUNE
    return _prune_scope_problem(cluster) if prune else None


def _sync_inputs(documents: list[tuple[str, object]], result: SyncResult) -> list[tuple[str, LaunchSpecInput]]:
    """The documents that parse, each spec named once; the others' problems go to result.problems."""
    inputs: list[tuple[str, LaunchSpecInput]] = []
    named: dict[str, str] = {}
    for source, document in documents:
        try:
            data = parse_launch_spec(document)
        except SpecFileError as exc:
            result.problems.extend(f"{source}: {message}" for message in exc.messages)
            continue
        if (first := named.get(data.name)) is not None:
            result.problems.append(f"{source}: launch spec {data.name!r} is also in {first}")
            continue
        named[data.name] = source
        inputs.append((source, data))
    return inputs


def _sort(result: SyncResult) -> None:
    for names in (result.created, result.updated, result.unchanged, result.disabled, result.deleted,
                  result.draining):
        names.sort()


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
    confirmed: bool = False, fence: int = 0,
) -> Assignment:
    """The claim. Raises IntegrityError when the EIP or the node already has an open assignment.
    fence: the fencing number of the pass that opens it (pools/locks.py)."""
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
            fence=fence,
        )


def assignment_confirm(*, assignment: Assignment, association_id: str) -> bool:
    """Mark a claim confirmed by AWS. False when it was closed meanwhile (someone else decided)."""
    updated = Assignment.objects.filter(pk=assignment.pk, closed_at__isnull=True).update(
        association_id=association_id, confirmed_at=timezone.now()
    )
    return updated == 1


def assignment_close_all(*, eip: ElasticIP, reason: str, kind: str) -> int:
    """Close every open assignment of the EIP (its record said another node; AWS shows it elsewhere)."""
    return Assignment.objects.filter(eip=eip, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason[:200], close_kind=kind)


def claims_seen_stale(*, spec: LaunchSpec, fence: int, now: datetime | None = None,
                      renewals: Callable[[set[int]], dict[int, datetime]] | None = None) -> int:
    """Unconfirmed claims of the spec opened by an earlier holder (a lower fencing number): their AssociateAddress
    may still be on its way until one lease time after that holder last renewed its lease. Stamp when that was
    (`renewals`: fencing number -> its last renewal, on Redis's clock), or, where nobody knows any more (a
    failover lost it), when a newer holder first saw them (`now`: Redis's clock too; else the database's).
    pools/snapshot.py counts the lease time from the stamp."""
    stale = Assignment.objects.filter(launch_spec=spec, closed_at__isnull=True, confirmed_at__isnull=True,
                                      fence__lt=fence, stale_since__isnull=True)
    fences = set(stale.values_list("fence", flat=True))
    last = renewals(fences) if renewals is not None and fences else {}
    stamped = 0
    for older in sorted(fences):
        stamped += stale.filter(fence=older).update(stale_since=last.get(older) or now or Now())
    return stamped


def spec_plan_store(*, spec: LaunchSpec, plan: Plan, eips: Sequence[EipView], nodes: Sequence[NodeView],
                    claims: Mapping[str, Claim], fence: int = 0, planned_at: datetime | None = None) -> bool:
    """Keep the plan a pass has just made, for the spec page and the API (SpecPlan: one row per spec, written
    over; selectors.plan_preview reads it). For a disabled spec, its drain EIP by EIP (pools/drain.py), from the
    planner inputs the plan was made from (eips, nodes, claims).

    A pass calls it inside its fenced transaction (Lease.fenced), like its other writes: a holder that lost the
    spec writes nothing. Whatever the caller, a plan of a lower fencing number never replaces one of a higher
    number (0, a pass without a lease, is not ordered). planned_at: the clock the pass planned with (Redis's);
    None: the database's. False when the stored plan is a newer holder's and stays."""
    values = {
        "lines": plan.describe(),
        "drain": [] if spec.enabled else [asdict(hold) for hold in drain_holds(plan, eips, nodes, claims)],
        "planned_at": planned_at if planned_at is not None else Now(),
        "fence": fence,
        "spec_updated_at": spec.updated_at,
    }
    rows = SpecPlan.objects.filter(spec_id=spec.pk)
    mine = rows.filter(fence__lte=fence) if fence else rows
    if mine.update(**values):
        return True
    if rows.exists():
        return False  # a newer holder's plan
    try:
        # A savepoint: passes without a lease may race to create the row (a check, then a create), and the one that
        # waited on the other's uncommitted row meets its duplicate key; its own transaction must go on.
        with transaction.atomic():
            SpecPlan.objects.create(spec_id=spec.pk, **values)
    except IntegrityError:
        return bool(mine.update(**values))  # created meanwhile: written over by the same rule
    return True


def spec_plan_confirm(*, spec: LaunchSpec, fence: int = 0, planned_at: datetime | None = None) -> None:
    """A quiet pass (workers/observe.py: nothing changed since the pass that had nothing to do and stored its
    plan) would plan the same: the stored plan stands, as of this pass. Fenced and ordered like spec_plan_store."""
    rows = SpecPlan.objects.filter(spec_id=spec.pk, spec_updated_at=spec.updated_at)
    (rows.filter(fence__lte=fence) if fence else rows).update(planned_at=planned_at or Now(), fence=fence)


def assignment_close(*, assignment: Assignment, reason: str, kind: str = "") -> bool:
    """Close an open assignment. False when it was already closed: the caller lost a race.

    kind (Assignment.CloseKind): why, for the free order; only a refusal by AWS demotes the EIP.
    """
    updated = Assignment.objects.filter(pk=assignment.pk, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason[:200], close_kind=kind
    )
    return updated == 1


# --- the region's sequence: readings ordered without wall clocks ------------------------------------


def region_seq_bump(*, region: str) -> int:
    """The region's next sequence number, committed before this returns: a reading that starts after this
    call sees at least this number. Call it outside any transaction (a savepoint would hide the bump)."""
    return next_value(RegionSequence, key={"region": region}, field="value")


def region_addresses_written(*, region: str) -> None:
    """An ElasticIP row of the region was written outside a reading's save (an association confirmed, a release, a
    move by hand): in the writer's transaction, so that the next save writes every row again, even from a reading
    equal to the one the rows were last written from (AWS may be back where it was, while the row moved). The
    row exists: every change to AWS bumps the region's sequence first (region_seq_bump)."""
    RegionSequence.objects.filter(region=region).update(addresses_written=F("addresses_written") + 1)


def region_reading_number(*, region: str) -> int:
    """The number of a DescribeAddresses reading of the region about to start, one more than the last one's, by
    the database whatever host asks (RegionFacts.addresses_read): saves are ordered by it (workers/observe.py)."""
    return next_value(RegionFacts, key={"region": region}, field="addresses_read")


# --- manual reassign requests ----------------------------------------------------------------------


def reassign_request_create(*, eip: ElasticIP, node_name: str, actor: str) -> ReassignRequest:
    """The operator's intent, recorded before anything moves; a worker carries it out."""
    return ReassignRequest.objects.create(eip=eip, node_name=node_name, actor=actor, created_at=timezone.now())


def reassign_refusal(*, eip: ElasticIP, state: str) -> str | None:
    """Why this EIP may not be moved by hand, known before any worker looks; None: a worker decides.
    `state` is `selectors.eip_state(eip)`. The dashboard and the API refuse in these words."""
    if eip.gone:
        return f"{eip.public_ip} is gone from AWS or from the pool."
    if state == "conflict":
        return (f"{eip.public_ip} is in conflict (AWS shows it associated without a record of eipdash): "
                "it is not moved by hand.")
    return None


def reassign_request_submit(*, eip: ElasticIP, node_name: str, actor: str) -> ReassignRequest:
    """Record the operator's intent and enqueue the move once that is committed (a worker that picks the task
    up at once must find the row). The request comes back as it stands: already failed if the queue did not
    answer."""
    with transaction.atomic():
        reassign = reassign_request_create(eip=eip, node_name=node_name, actor=actor)
        request_id = reassign.pk
        transaction.on_commit(lambda: reassign_request_enqueue(request_id=request_id))
    reassign.refresh_from_db()
    return reassign


def reassign_request_enqueue(*, request_id: int) -> None:
    """Hand the move to the workers, by task name: the web holds no AWS or Kubernetes rights and never
    imports the worker code (boto3, the kubernetes client). A broker that does not answer ends the request
    as failed, with nothing changed, so the operator sees why instead of a request pending forever."""
    from eipdash.celery import app

    try:
        with app.connection_for_write(settings.REDIS_URL or settings.CELERY_BROKER_URL) as connection:
            app.send_task("workers.tasks.reassign", args=[request_id], connection=connection,
                          retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5})
    except Exception as exc:  # kombu's and redis' connection errors have no common base worth naming
        _log.warning("reassign request %s: could not enqueue: %s", request_id, exc)
        reassign_request_finish(request_id=request_id, state=ReassignRequest.State.FAILED,
                                message=f"The workers' queue did not answer ({type(exc).__name__}); nothing was "
                                        "changed. Try again in a moment.")


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
