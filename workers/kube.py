"""The Kubernetes adapter: the only module of eipdash that imports `kubernetes`.

Reads use raw JSON (`_preload_content=False`) rather than the client's models: fewer allocations for
large node lists, and taints keep their API field names. Every call carries an explicit timeout, and SDK
errors leave this module only as the domain errors below.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
import urllib3
import yaml
from django.conf import settings
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pools import kubeconfigs, metrics
from pools.keys import ALLOCATION_ANNOTATION, EIP_LABEL, FENCE_ANNOTATION
from pools.locks import LeaseLost
from pools.pool_rule import labels_text

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# Why a node drains, as the dashboard and the release events say it ("" = not draining).
DRAIN_DELETING = "deleting"
DRAIN_CLUSTER_AUTOSCALER = "cluster-autoscaler"
DRAIN_KARPENTER = "karpenter"
DRAIN_CORDONED = "cordoned"
CLUSTER_AUTOSCALER_TAINTS = frozenset({"ToBeDeletedByClusterAutoscaler"})
KARPENTER_TAINTS = frozenset({"karpenter.sh/disrupted", "karpenter.sh/disruption"})
# The node controller's taints of a node whose kubelet stopped answering (a spot interruption, a lost host).
NOT_READY_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})
MERGE_PATCH = "application/merge-patch+json"
TAINT_RETRIES = 5

_PROVIDER_ID = re.compile(r"^aws:///(?P<az>[^/]*)/(?P<instance>[^/]+)$")
# (API server, label selector) -> the nodes of its last list, by (name, resourceVersion) (Kube.list_nodes_versioned).
_listed: dict[tuple[str, str], dict[tuple[str, str], KubeNode]] = {}

T = TypeVar("T")


class KubeError(Exception):
    """Base of the adapter's errors."""


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    """409: a resourceVersion precondition failed (or, for creates, the object exists)."""


class Fenced(KubeError, LeaseLost):
    """A newer holder of the spec's lease has written this node (its fencing number is past this pass's):
    this pass lost the spec and must write nothing more (a LeaseLost too)."""


@dataclass(frozen=True)
class Fence:
    """The fencing number a pass writes under (pools/locks.py), for the spec it holds."""

    spec_id: int
    number: int


class Replaced(NotFound):
    """The node name now belongs to another instance (EKS reuses ip-… names): the node a write was meant
    for is gone, like a 404, and the write must not land on its successor. Lifting the startup taint of a
    new node that holds no EIP would make it schedulable without one (I1)."""


class Expired(KubeError):
    """410 Gone: the resourceVersion a watch resumes from is older than the history the server keeps; list
    again and watch from the list's version."""


class Transient(KubeError):
    """5xx, 429, timeouts, connection errors: worth retrying later."""


class Permanent(KubeError):
    """Any other 4xx: retrying the same request will not help."""


class KubeconfigError(Permanent):
    """No client: the kubeconfig is missing, unreadable or broken, or holds credentials that are refused
    (pools/kubeconfigs.py). Nothing was sent to any API server."""


@dataclass(frozen=True)
class NodeEvent:
    """One event of a node watch: ADDED, MODIFIED or DELETED with its node, or BOOKMARK (node None).
    resource_version is where a watch resumes to see what comes after this event."""

    type: str
    node: KubeNode | None
    resource_version: str


@dataclass(frozen=True)
class KubeNode:
    name: str
    provider_id: str
    instance_id: str | None
    az: str
    labels: dict[str, str] = field(hash=False)
    annotations: dict[str, str] = field(hash=False)
    taints: tuple[dict[str, Any], ...] = field(hash=False)
    unschedulable: bool
    deleting: bool
    resource_version: str
    # The kubelet's Ready condition is True. A node whose kubelet went silent (its instance terminated by a
    # spot interruption) stays listed, NotReady, until the cloud controller or Karpenter deletes it.
    ready: bool = True

    @cached_property
    def observed(self) -> str:
        """Everything eipdash reads of the node but its resourceVersion (status heartbeats move it), as one text:
        a quiet pass compares what it planned from by these (workers/observe.py)."""
        return json.dumps([self.name, self.provider_id, self.labels, self.annotations, list(self.taints),
                           self.unschedulable, self.deleting, self.ready], separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> KubeNode:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        provider_id = spec.get("providerID") or ""
        match = _PROVIDER_ID.match(provider_id)
        instance_id = match.group("instance") if match else None
        return cls(
            name=meta["name"],
            provider_id=provider_id,
            # Fargate and other providers carry ids that are not EC2 instances: eipdash leaves them alone.
            instance_id=instance_id if instance_id and instance_id.startswith("i-") else None,
            az=match.group("az") if match else "",
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            taints=tuple(dict(t) for t in spec.get("taints") or ()),
            unschedulable=bool(spec.get("unschedulable")),
            deleting=bool(meta.get("deletionTimestamp")),
            resource_version=str(meta.get("resourceVersion") or ""),
            ready=_is_ready(obj),
        )

    def has_taint(self, key: str) -> bool:
        return any(t.get("key") == key for t in self.taints)

    @property
    def unreachable(self) -> bool:
        """NotReady, or tainted so by the node controller: its instance may be gone, whatever EC2 said before."""
        return not self.ready or any(t.get("key") in NOT_READY_TAINTS for t in self.taints)

    @property
    def drain_reason(self) -> str:
        """Why the node is on its way out, the most definite reason first; "" when it is not.

        A node that drains keeps its EIP until its last workload pod is gone (I2), then gives it back: being
        deleted, marked for removal by the cluster autoscaler or Karpenter, or cordoned by an operator."""
        keys = {t.get("key") for t in self.taints}
        if self.deleting:
            return DRAIN_DELETING
        if keys & CLUSTER_AUTOSCALER_TAINTS:
            return DRAIN_CLUSTER_AUTOSCALER
        if keys & KARPENTER_TAINTS:
            return DRAIN_KARPENTER
        if self.unschedulable:
            return DRAIN_CORDONED
        return ""

    @property
    def draining(self) -> bool:
        return bool(self.drain_reason)


def _is_ready(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def fence_map(node: Mapping[str, Any]) -> dict[str, int]:
    """The node's fence annotation: spec id (as text) -> the fencing number of that spec's last writer."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(FENCE_ANNOTATION) or "{}"
    try:
        found = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in found.items() if isinstance(v, int)} if isinstance(found, dict) else {}


# Which pods a drain waits for, as Karpenter decides it: named rules on the raw pod JSON.


def is_terminal(pod: Mapping[str, Any]) -> bool:
    """Succeeded or Failed: the pod runs nothing any more."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_mirror_pod(pod: Mapping[str, Any]) -> bool:
    """A static pod's mirror: the kubelet runs it from a file, evicting the mirror stops nothing."""
    return MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def is_daemonset_pod(pod: Mapping[str, Any]) -> bool:
    """Owned by a DaemonSet: it runs on every node and is not moved off a draining one."""
    return any(ref.get("kind") == "DaemonSet" for ref in (pod.get("metadata") or {}).get("ownerReferences") or ())


def is_workload_pod(pod: Mapping[str, Any]) -> bool:
    """A pod a drain waits for before the node's EIP may go (I2)."""
    return not (is_terminal(pod) or is_mirror_pod(pod) or is_daemonset_pod(pod))


def _verb(fn: Callable[..., Any]) -> str:
    """The API verb of an SDK method (read_node: get, list_node: list...); `next` on a watch stream: watch."""
    name = getattr(fn, "__name__", "")
    if name == "next":
        return "watch"
    first = name.split("_", 1)[0]
    return {"read": "get", "replace": "update"}.get(first, first) or "call"


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one SDK call, count it (eipdash_kube_calls_total) and translate its failures into the domain
    errors."""
    try:
        result = _call_mapped(fn, *args, **kwargs)
    except KubeError as error:
        metrics.KUBE_CALLS.labels(_verb(fn), type(error).__name__.lower()).inc()
        raise
    if fn is not next:  # a watch stream's events are not calls: only its failures count
        metrics.KUBE_CALLS.labels(_verb(fn), "ok").inc()
    return result


def _call_mapped(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except ApiException as error:
        raise _domain_error(error.status or 0, _detail(error)) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:  # refused, reset, timed out, protocol errors
        raise Transient(f"{type(error).__name__}: {error}") from error


def _domain_error(status: int, detail: str) -> KubeError:
    if status == 404:
        return NotFound(detail)
    if status == 409:
        return Conflict(detail)
    if status == 410:
        return Expired(detail)
    if status == 429 or status >= 500 or status == 0:
        return Transient(detail)
    return Permanent(detail)


def _status_error(status: Mapping[str, Any]) -> KubeError:
    """The domain error of a Status object (a watch's ERROR event carries one)."""
    code = int(status.get("code") or 0)
    return _domain_error(code, f"{code}: {status.get('message') or status.get('reason') or ''}")


def _detail(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        message = error.reason or ""
    return f"{error.status}: {message}"


def _json(response: Any) -> dict[str, Any]:
    try:
        # orjson: the node list of a large cluster is megabytes, and decoding it was most of a steady pass's CPU.
        found: dict[str, Any] = orjson.loads(response.data)
        return found
    finally:
        response.release_conn()


# Loading a kubeconfig and building an ApiClient takes about half a second; a pass runs every few
# seconds. Share one per (context, config) for a few minutes, then load afresh so that rotated
# credentials (exec plugins, projected service-account tokens) are picked up. A file that changed is
# loaded again at once: one that broke, or now holds an exec plugin, must not hide behind a cached client.
_CLIENT_TTL_SECONDS = 300.0
_clients: dict[tuple[str | None, str | None, str | None], tuple[float, object, Any]] = {}
_clients_lock = threading.Lock()


def _cached_client(context: str | None, config_file: str | None) -> Any:
    key = (context, config_file, os.environ.get("KUBECONFIG"))
    signature = _files_signature(config_file)
    with _clients_lock:
        cached = _clients.get(key)
        if (cached is not None and time.monotonic() - cached[0] < _CLIENT_TTL_SECONDS
                and cached[1] == signature):
            return cached[2]
        _clients.pop(key, None)
        api_client = Kube._load_client(context, config_file)
        _clients[key] = (time.monotonic(), signature, api_client)
        return api_client


def _files_signature(config_file: str | None) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What tells that the kubeconfig file(s) changed: each one's device, inode, size and mtime (None: absent)."""
    paths = [config_file] if config_file else _default_path().split(os.pathsep)
    found: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def _default_path() -> str:
    # Read $KUBECONFIG now: the SDK's own default was frozen when `kubernetes` was imported.
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def pool_size() -> int:
    """Connections the client keeps per API server: the step pool's threads, the node watch, the events'
    thread and a spare."""
    return settings.EIPDASH_STEP_CONCURRENCY + 4


# What the SDK's loader raises on a file it cannot use, besides its ConfigException: a list where it wants
# a mapping (TypeError, AttributeError, KeyError, IndexError), bad base64 (ValueError), a missing file (OSError).
_LOAD_ERRORS = (ConfigException, yaml.YAMLError, OSError, ValueError, TypeError, KeyError, AttributeError,
                IndexError)


def _load_cluster_file(path: str, context: str | None, configuration: Any) -> None:
    """A cluster row's own kubeconfig, under the rules it was saved with (pools/kubeconfigs.py), checked again
    at every load: the file can change after it was saved, and an exec plugin must never run unless allowed.
    The file is read once, so what is checked is what is loaded."""
    try:
        parsed = kubeconfigs.read(path)
    except kubeconfigs.KubeconfigUnreadable as error:
        raise KubeconfigError(str(error)) from None
    problems = kubeconfigs.file_problems(parsed, shown=path)
    if not problems and (problem := kubeconfigs.selection_problem(parsed, context or "", shown=path)):
        problems.append(problem)
    if problems:
        raise KubeconfigError("; ".join(problems))
    try:
        # As load_kube_config loads a file, minus the write-back (no config_persister): the nodes carry the
        # file's path, so that relative certificate paths resolve next to it (config_base_path None).
        loader = config.kube_config.KubeConfigLoader(
            config_dict=config.kube_config.ConfigNode("kube-config", parsed, path), active_context=context,
            config_base_path=None)
        loader.load_and_set(configuration)
    except _LOAD_ERRORS as error:
        raise KubeconfigError(f"kubeconfig {path!r} cannot be loaded: {type(error).__name__}: {error}") from error


def _load_default(context: str | None, configuration: Any) -> None:
    """The workers' own kubeconfig ($KUBECONFIG, else ~/.kube/config), else the in-cluster service account. The
    operator who deploys the workers wrote it: its exec plugins run (an EKS `aws eks get-token`), as kubectl's."""
    path = _default_path()
    first = path.split(os.pathsep)[0]
    if os.environ.get("KUBECONFIG") or Path(first).exists():
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        except _LOAD_ERRORS as error:
            raise KubeconfigError(f"kubeconfig {path}: {type(error).__name__}: {error}") from error
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except _LOAD_ERRORS as error:
            raise KubeconfigError(f"no kubeconfig at {path} and not running in a cluster: {error}") from error


class ClusterConfig(Protocol):
    """What a Kube needs from a pools.models.Cluster row."""

    kube_context: str
    kubeconfig: str


def kube_for(cluster: ClusterConfig, **options: Any) -> Kube:
    """The client of one cluster: its own kubeconfig file if it names one, its context if it names one."""
    return Kube(context=cluster.kube_context or None, config_file=cluster.kubeconfig or None, **options)


class Kube:
    def __init__(self, *, context: str | None = None, config_file: str | None = None, api_client: Any = None,
                 request_timeout: float = 10.0) -> None:
        """Standard resolution: `config_file`, else $KUBECONFIG, else ~/.kube/config (with `context`, or
        the current one), else the in-cluster service account. A `config_file` is held to the rules of a
        cluster row's file (pools/kubeconfigs.py) at every load. Raises KubeconfigError when no client can be
        built."""
        self.request_timeout = request_timeout
        self.api_client = api_client or _cached_client(context, config_file)
        self.core = client.CoreV1Api(self.api_client)

    @staticmethod
    def _load_client(context: str | None, config_file: str | None) -> Any:
        configuration = client.Configuration()
        if config_file:
            _load_cluster_file(config_file, context, configuration)
        else:
            _load_default(context, configuration)
        # The SDK's urllib3 pool holds cpu_count×5 connections; a pass runs EIPDASH_STEP_CONCURRENCY node
        # writes at once, and a smaller pool discards (and reopens) a connection per write over its size.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, pool_size())
        return client.ApiClient(configuration)

    # ---- nodes

    def list_nodes(self, labels: Mapping[str, str], *, page_size: int = 500) -> list[KubeNode]:
        """Nodes carrying all these labels (an empty mapping selects every node).

        Served from the API server's watch cache (resourceVersion="0"), not from etcd: a pass every few
        seconds must not cost a quorum read of every node. The cache can trail etcd by a moment, which a
        pass tolerates like any other change that comes after its read."""
        return self.list_nodes_versioned(labels, page_size=page_size)[0]

    def list_all_nodes(self, *, page_size: int = 500) -> list[KubeNode]:
        return self.list_nodes({}, page_size=page_size)

    def list_nodes_versioned(self, labels: Mapping[str, str] | None = None, *,
                             page_size: int = 500) -> tuple[list[KubeNode], str]:
        """list_nodes and the list's resourceVersion, from which a watch sees every later change."""
        selector = labels_text(labels or {})
        version: list[str] = []
        # A node whose resourceVersion is the one of the last list is the same object: not built again (a steady
        # pass lists thousands of unchanged nodes). Any change to it, by anyone, gives it a new resourceVersion.
        key = (str(getattr(self.api_client.configuration, "host", "")), selector)
        last, now = _listed.get(key, {}), {}
        nodes = []
        for obj in self._paged(self.core.list_node, page_size, resource_version="0", version=version,
                               label_selector=selector or None):
            meta = obj.get("metadata") or {}
            seen = (str(meta.get("name") or ""), str(meta.get("resourceVersion") or ""))
            node = last.get(seen) if seen[1] else None
            nodes.append(node if node is not None else KubeNode.from_api(obj))
            now[seen] = nodes[-1]
        _listed[key] = now
        return nodes, version[0] if version else ""

    def get_node(self, node_name: str) -> KubeNode:
        return KubeNode.from_api(self._read_node(node_name))

    def workload_pod_count(self, node_name: str) -> int:
        """Pods on the node that a drain waits for: not DaemonSet-owned, not mirror pods, not finished."""
        # The finished phases are filtered server-side too; the check below keeps the rule whole in one place.
        selector = f"spec.nodeName={node_name},status.phase!=Succeeded,status.phase!=Failed"
        pods = self._paged(self.core.list_pod_for_all_namespaces, 500, field_selector=selector)
        return sum(1 for pod in pods if is_workload_pod(pod))

    # Lifting the taint and setting or clearing the EIP marks act on behalf of one node: given `instance_id`
    # (the instance the caller observed behind the name), they refuse with Replaced when the name now
    # belongs to another instance, and the write carries the read's resourceVersion, so a replacement
    # between the read and the write fails it with 409 and is caught on the re-read. None: by name only.
    # Adding the startup taint goes by name: whichever node has the name then, the taint only keeps pods
    # away until the node holds an EIP of its own, which is the safe side of I1.

    def lift_startup_taint(self, node_name: str, taint_key: str, *, instance_id: str | None = None,
                           fence: Fence | None = None) -> bool:
        """Remove every taint with this key. The taints list is replaced whole by a patch, so it goes out
        with a resourceVersion precondition: a taint another controller added after our read makes the
        write fail with 409 instead of being silently dropped, and we re-read and try again."""
        def without(taints: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
            kept = [t for t in taints if t.get("key") != taint_key]
            return kept if len(kept) != len(taints) else None

        return self._change_taints(node_name, without, instance_id, fence)

    def add_startup_taint(self, node_name: str, taint_key: str, *, effect: str = "NoSchedule",
                          fence: Fence | None = None) -> bool:
        """Put the startup taint back (the mirror of lift_startup_taint): False when the node already has
        a taint with this key. The whole taints list goes out with a resourceVersion precondition, so a
        taint another controller changes meanwhile is never dropped: on 409 we re-read and try again."""
        def with_it(taints: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
            if any(t.get("key") == taint_key for t in taints):
                return None
            return [*taints, {"key": taint_key, "value": "true", "effect": effect}]

        # Stamped even when the taint is already there: a pass that re-taints a node before taking its EIP must
        # fence out an older pass's pending lift of that taint, whoever put the taint there.
        return self._change_taints(node_name, with_it, fence=fence, stamp=True)

    def _change_taints(self, node_name: str,
                       change: Callable[[list[dict[str, Any]]], list[dict[str, Any]] | None],
                       instance_id: str | None = None, fence: Fence | None = None, stamp: bool = False) -> bool:
        """Replace the node's taints with change(taints); False when change says there is nothing to do."""
        def patch(node: dict[str, Any]) -> dict[str, Any] | None:
            changed = change((node.get("spec") or {}).get("taints") or [])
            return None if changed is None else {"spec": {"taints": changed or None}}

        return self._patch_checked(node_name, patch, instance_id, fence, what="taints", stamp=stamp)

    def set_eip_marks(self, node_name: str, *, public_ip: str, allocation_id: str,
                      instance_id: str | None = None, fence: Fence | None = None) -> None:
        marks = {"metadata": {"labels": {EIP_LABEL: public_ip}, "annotations": {ALLOCATION_ANNOTATION: allocation_id}}}
        if instance_id is None and fence is None:
            self._patch_node(node_name, marks)
        else:
            self._patch_checked(node_name, lambda node: marks, instance_id, fence, what="labels")

    def mark_ready(self, node_name: str, *, public_ip: str, allocation_id: str, taint_key: str | None,
                   instance_id: str | None = None, fence: Fence | None = None) -> bool:
        """set_eip_marks and lift_startup_taint (when taint_key is given) in one read and one merge patch,
        under the read's resourceVersion and the same instance check (Replaced) and 409 retry as each of
        them. True when the taint was there and is lifted; a node already marked and untainted is not
        written at all."""
        lifted = False

        def patch(node: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal lifted
            meta = node.get("metadata") or {}
            taints = (node.get("spec") or {}).get("taints") or []
            kept = [t for t in taints if t.get("key") != taint_key] if taint_key else taints
            lifted = len(kept) != len(taints)
            marked = ((meta.get("labels") or {}).get(EIP_LABEL) == public_ip
                      and (meta.get("annotations") or {}).get(ALLOCATION_ANNOTATION) == allocation_id)
            if marked and not lifted:
                return None
            body: dict[str, Any] = {"metadata": {"labels": {EIP_LABEL: public_ip},
                                                 "annotations": {ALLOCATION_ANNOTATION: allocation_id}}}
            if lifted:
                body["spec"] = {"taints": kept or None}
            return body

        self._patch_checked(node_name, patch, instance_id, fence, what="labels and taints")
        return lifted

    def clear_eip_marks(self, node_name: str, *, instance_id: str | None = None, fence: Fence | None = None) -> None:
        """Remove the label and annotation; a node that is already gone (or replaced: the marks of the
        node we meant went with it) has nothing left to clear."""
        marks = {"metadata": {"labels": {EIP_LABEL: None}, "annotations": {ALLOCATION_ANNOTATION: None}}}
        try:
            if instance_id is None and fence is None:
                self._patch_node(node_name, marks)
            else:
                self._patch_checked(node_name, lambda node: marks, instance_id, fence, what="labels")
        except NotFound:
            pass

    def _patch_checked(self, node_name: str, build: Callable[[dict[str, Any]], dict[str, Any] | None],
                       instance_id: str | None, fence: Fence | None = None, *, what: str,
                       stamp: bool = False) -> bool:
        """Read the node, check it is still `instance_id` (when given) and that no newer holder of the spec
        wrote it (`fence`: Fenced), and merge-patch it with build(node) under the read's resourceVersion, the
        fence annotation set to this pass's number in the same patch; False when build says there is nothing
        to do (with `stamp`, the fence annotation is still written when it is behind). A node changed meanwhile
        (another controller's taint, a new node under the same name, a newer holder's write) makes the write
        fail with 409 instead of overwriting what we did not see, and the node is read again: so the API server
        itself refuses a stale holder's write, whatever that holder read."""
        for _ in range(TAINT_RETRIES):
            node = self._read_node(node_name)
            if instance_id is not None:
                now = KubeNode.from_api(node).instance_id
                if now != instance_id:
                    raise Replaced(f"node {node_name} is now instance {now or '(none)'}, not {instance_id}")
            fences = fence_map(node)
            if fence is not None and fences.get(str(fence.spec_id), 0) > fence.number:
                raise Fenced(f"node {node_name}: a newer pass of launch spec {fence.spec_id} wrote it (fence "
                             f"{fences[str(fence.spec_id)]}, this pass {fence.number})")
            patch = build(node)
            changed = patch is not None
            if patch is None:
                if not (stamp and fence is not None and fences.get(str(fence.spec_id), 0) < fence.number):
                    return False
                patch = {}
            meta = {**patch.get("metadata", {}), "resourceVersion": node["metadata"]["resourceVersion"]}
            if fence is not None:
                fences[str(fence.spec_id)] = fence.number
                meta["annotations"] = {**meta.get("annotations", {}),
                                       FENCE_ANNOTATION: json.dumps(fences, sort_keys=True, separators=(",", ":"))}
            try:
                self._patch_node(node_name, {**patch, "metadata": meta})
                return changed
            except Conflict:
                continue
        raise Conflict(f"node {node_name}: {what} kept changing under us ({TAINT_RETRIES} attempts)")

    def emit_node_event(self, node_name: str, *, type_: str, reason: str, action: str, note: str,
                        controller: str, instance: str, namespace: str = "default") -> bool:
        """An events.k8s.io/v1 Event regarding the Node, as kubelet and Karpenter write them (namespace
        `default`, the node's uid so that `kubectl describe node` lists it). False when the node is gone."""
        try:
            node = self._read_node(node_name)
        except NotFound:
            return False
        now = datetime.now(UTC)
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            # Unique like the client-go recorder's names: the object's name and a time-based suffix.
            "metadata": {"name": f"{node_name}.{time.time_ns():x}", "namespace": namespace},
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": controller, "reportingInstance": instance[:128],
            "action": action, "reason": reason, "type": type_,
            # The API refuses a note over 1 kB.
            "note": note[:1024],
            "regarding": {"kind": "Node", "apiVersion": "v1", "name": node_name,
                          "uid": (node.get("metadata") or {}).get("uid", "")},
        }
        _json(_call(client.EventsV1Api(self.api_client).create_namespaced_event, namespace, body,
                    _preload_content=False, _request_timeout=self.request_timeout))
        return True

    def watch_nodes(self, *, resource_version: str = "", timeout_seconds: int = 60) -> Iterator[NodeEvent]:
        """The node events after `resource_version` until the server ends the watch after `timeout_seconds`.

        Without a resource_version the server starts with an ADDED event for every node. Bookmarks are asked
        for: a BOOKMARK carries the version to resume from when no node changed. A version older than the
        server keeps ends the watch with Expired (410 Gone): list again.

        The stream is read line by line from the raw response: the SDK's Watch would build a model object
        for every event, and retries a 410 once on its own."""
        def watch_node(**kwargs: Any) -> Any:  # named for the call counter's verb
            return self.core.list_node(**kwargs)

        response = _call(watch_node, watch=True, allow_watch_bookmarks=True, timeout_seconds=timeout_seconds,
                         resource_version=resource_version or None, _preload_content=False,
                         # The read timeout bounds a silent connection: the server closes it at timeout_seconds.
                         _request_timeout=(self.request_timeout, timeout_seconds + self.request_timeout))
        try:
            lines = watch.watch.iter_resp_lines(response)
            while True:
                line = _call(next, lines, None)
                if line is None:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise _status_error(obj)
                version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if kind == "BOOKMARK":
                    yield NodeEvent(kind, None, version)
                elif kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield NodeEvent(kind, KubeNode.from_api(obj), version)
        finally:
            response.close()
            response.release_conn()

    # ---- plumbing

    def _read_node(self, node_name: str) -> dict[str, Any]:
        return _json(_call(self.core.read_node, node_name, _preload_content=False,
                           _request_timeout=self.request_timeout))

    def _patch_node(self, node_name: str, patch: dict[str, Any]) -> None:
        # The SDK would default to JSON patch for a dict body; merge patch is what we mean.
        _json(_call(self.core.patch_node, node_name, patch, _content_type=MERGE_PATCH,
                    _request_timeout=self.request_timeout, _preload_content=False))

    def _paged(self, list_fn: Callable[..., Any], page_size: int, *, resource_version: str | None = None,
               version: list[str] | None = None, **selectors: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list, page by page. `resource_version` goes with the first page only: a continue
        token carries the version of the list it continues, and the server refuses both together. With "0"
        the server answers from its watch cache and usually ignores `limit` (one page, no token); a server
        that pages anyway is followed. The list's resourceVersion is appended to `version` when given."""
        token: str | None = None
        while True:
            page = _json(_call(list_fn, limit=page_size, _continue=token, _preload_content=False,
                               _request_timeout=self.request_timeout,
                               **({"resource_version": resource_version} if resource_version and not token else {}),
                               **selectors))
            yield from page.get("items") or ()
            metadata = page.get("metadata") or {}
            if version is not None and not version:
                version.append(str(metadata.get("resourceVersion") or ""))
            token = metadata.get("continue")
            if not token:
                return
