"""A small in-memory Kubernetes API server on loopback, for the official client and for kubectl.

It serves nodes, pods and namespaces of core/v1 with the semantics eipdash depends on: label and field
selectors, limit/continue, resourceVersion preconditions (409), merge / strategic-merge / JSON patch,
the status subresource, finalizers with deletionTimestamp, and watch. Standard library only.
Opt-in and seeded (``KubeFaults``): 409s and 500s on writes, 500s on reads, watch streams cut short; off
by default, and never on the side door (``open_side_door``) that a harness uses to see the world.
Run it in the foreground with `python -m sandbox.kube_emulator --port 6443 --kubeconfig PATH`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.ports import SERVE_POLL, LoopbackHTTPServer
from sandbox.signals import on_stop_signals

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# resource -> (kind, namespaced, short names, field selectors the real API supports for it)
RESOURCES: dict[str, tuple[str, bool, list[str], set[str]]] = {
    "nodes": ("Node", False, ["no"], {"metadata.name", "spec.unschedulable"}),
    "pods": ("Pod", True, ["po"], {
        "metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
        "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName",
    }),
    "namespaces": ("Namespace", False, ["ns"], {"metadata.name", "status.phase"}),
    "events": ("Event", True, ["ev"], {
        "metadata.name", "metadata.namespace", "regarding.kind", "regarding.name", "regarding.uid",
        "reportingController", "reason", "type",
    }),
}
# Resources served from an API group (/apis/<group>/<version>/...) rather than the core /api/v1.
GROUP_VERSIONS = {"events": "events.k8s.io/v1"}
# The API server drops events after an hour; here the oldest go once there are this many.
EVENTS_KEPT = 2000
SUBRESOURCES = {("nodes", "status"), ("pods", "status"), ("pods", "eviction")}
# Strategic merge: lists of objects merged by key (from the core/v1 patchMergeKey tags). Anything not
# listed here is replaced whole -- notably Node spec.taints, which carries no patch strategy upstream.
MERGE_KEYS = {
    "conditions": "type", "addresses": "type", "containers": "name", "initContainers": "name",
    "ephemeralContainers": "name", "volumes": "name", "env": "name", "ownerReferences": "uid",
}
PRIMITIVE_MERGE_LISTS = {"finalizers"}
EVENT_LOG_SIZE = 10_000
DEFAULT_WATCH_SECONDS = 1800
# A watch that asked for bookmarks (allowWatchBookmarks=true) gets one after this long without an event, and
# one as the server ends it at timeoutSeconds, as the real API server does (it waits about a minute).
BOOKMARK_SECONDS = 1.0


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- selectors

_SET_REQ = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")

Requirement = tuple[str, str, frozenset[str]]


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` into (key, operator, values) requirements."""
    requirements: list[Requirement] = []
    # Commas inside `in (...)` belong to the value set, not to the requirement list.
    for term in re.split(r",(?![^()]*\))", text or ""):
        if not term.strip():
            continue
        if m := _SET_REQ.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(1), m.group(2), values))
        elif m := _EQ_REQ.match(term):
            requirements.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
        elif m := _EXISTS_REQ.match(term):
            requirements.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term.strip()!r}")
    return requirements


def labels_match(requirements: list[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in requirements:
        present, value = key in labels, labels.get(key)
        ok = {
            "=": present and value in values,
            "in": present and value in values,
            "!=": not present or value not in values,
            "notin": not present or value not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


def parse_field_selector(resource: str, text: str) -> list[tuple[str, bool, str]]:
    """Parse `spec.nodeName=x,status.phase!=Succeeded` into (field, equal?, value) terms."""
    terms = []
    for term in (text or "").split(","):
        if not term.strip():
            continue
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: {term!r}")
        if m.group(1) not in RESOURCES[resource][3]:
            raise ApiError(400, "BadRequest", f'field label not supported: {m.group(1)}')
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return terms


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _matcher(resource: str, namespace: str | None, label_selector: str, field_selector: str,
             ) -> Callable[[dict[str, Any]], bool]:
    requirements = parse_label_selector(label_selector)
    fields = parse_field_selector(resource, field_selector)

    def matches(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        if not labels_match(requirements, meta.get("labels") or {}):
            return False
        return all((_field_value(obj, f) == v) == equal for f, equal, v in fields)

    return matches


# ---------------------------------------------------------------- patches

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge for the fields of MERGE_KEYS; other lists replace as in a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return strategic_merge_patch({}, {k: v for k, v in patch.items() if k != "$patch"})
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [x for x in result.get(field) or [] if x not in value]
        elif key.startswith("$"):
            continue  # $setElementOrder / $retainKeys only order or prune; the stored order is kept
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list_by_key(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE_LISTS:
            current = list(result.get(key) or [])
            result[key] = current + [x for x in value if x not in current]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list_by_key(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next((i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ApiError(422, "Invalid", f"invalid JSON pointer: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")] if path else []


def _resolve_parent(doc: Any, tokens: list[str], path: Any) -> Any:
    for token in tokens[:-1]:
        try:
            doc = doc[int(token)] if isinstance(doc, list) else doc[token]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"doc is missing path: {path!r}") from None
    return doc


def _json_pointer_get(doc: Any, path: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _resolve_parent(doc, tokens, path)
    try:
        return parent[int(tokens[-1])] if isinstance(parent, list) else parent[tokens[-1]]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(422, "Invalid", f"doc is missing path: {path!r}") from None


def _json_pointer_set(doc: Any, path: Any, value: Any, *, insert: bool) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _resolve_parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        if not insert and last not in parent:
            raise ApiError(422, "Invalid", f"doc is missing path: {path!r}")
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" and insert else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent) - (0 if insert else 1):
            raise ApiError(422, "Invalid", f"invalid index in path: {path!r}")
        if insert:
            parent.insert(index, value)
        else:
            parent[index] = value
    else:
        raise ApiError(422, "Invalid", f"doc is missing path: {path!r}")
    return doc


def _json_pointer_remove(doc: Any, path: Any) -> Any:
    tokens = _pointer(path)
    _json_pointer_get(doc, path)  # raises when missing
    parent = _resolve_parent(doc, tokens, path)
    del parent[int(tokens[-1]) if isinstance(parent, list) else tokens[-1]]
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902. A failing operation (a `test` that does not hold, a missing path) answers 422."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json patch must be a JSON array of operations")
    doc = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict):
            raise ApiError(400, "BadRequest", "json patch operation must be an object")
        op, path = operation.get("op"), operation.get("path")
        if op == "test":
            if _json_pointer_get(doc, path) != operation.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed")
        elif op == "add":
            doc = _json_pointer_set(doc, path, copy.deepcopy(operation.get("value")), insert=True)
        elif op == "replace":
            doc = _json_pointer_set(doc, path, copy.deepcopy(operation.get("value")), insert=False)
        elif op == "remove":
            doc = _json_pointer_remove(doc, path)
        elif op in ("move", "copy"):
            value = copy.deepcopy(_json_pointer_get(doc, operation.get("from")))
            if op == "move":
                doc = _json_pointer_remove(doc, operation["from"])
            doc = _json_pointer_set(doc, path, value, insert=True)
        else:
            raise ApiError(400, "BadRequest", f"unexpected json patch operation {op!r}")
    return doc


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> Any:
    kind = content_type.split(";")[0].strip().lower()
    if kind == MERGE_PATCH:
        return merge_patch(target, patch)
    if kind == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, patch)
    if kind == JSON_PATCH:
        return json_patch(target, patch)
    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                   f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}")


# ---------------------------------------------------------------- manifests

def node_manifest(name: str, instance_id: str, az: str = "us-east-1a", labels: dict[str, str] | None = None,
                  taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Node as an EC2-backed kubelet registers it: providerID aws:///<az>/<instance-id>."""
    node: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": az, "topology.kubernetes.io/region": az[:-1],
            **(labels or {}),
        }},
        "spec": {"providerID": f"aws:///{az}/{instance_id}"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    if taints:
        node["spec"]["taints"] = [dict(t) for t in taints]
    return node


def pod_manifest(name: str, node_name: str | None, namespace: str = "default", daemonset: bool = False,
                 mirror: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod bound to a node; `daemonset` adds a DaemonSet owner, `mirror` the static-pod annotation."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if daemonset:
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": f"{name}-ds",
                                        "uid": str(uuid.uuid4()), "controller": True}]
    if mirror:
        metadata["annotations"] = {"kubernetes.io/config.mirror": secrets.token_hex(16)}
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


# ---------------------------------------------------------------- faults (opt-in)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class KubeFaultRates:
    """Probabilities per request on the faulty listener. All zero: the emulator behaves."""

    conflict: float = 0.0  # a write answers 409 Conflict and changes nothing
    write_error: float = 0.0  # a write answers 500 and changes nothing
    read_error: float = 0.0  # a get or list answers 500
    watch_drop: float = 0.0  # a watch stream is cut (no closing chunk) after drop_after seconds
    drop_after: tuple[float, float] = (0.5, 5.0)


class KubeFaults:
    """The seeded dice of the faulty listener; ``counts`` says what was injected, by kind."""

    def __init__(self, rates: KubeFaultRates, seed: int = 1) -> None:
        self.rates = rates
        self.enabled = True
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests = 0  # requests that met the dice (watches included)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def _roll(self, *kinds: str) -> str | None:
        with self._lock:
            draw = self._rng.random()
            self.requests += 1
            if not self.enabled:
                return None
            edge = 0.0
            for kind in kinds:
                edge += getattr(self.rates, kind)
                if draw < edge:
                    self.counts[kind] += 1
                    return kind
            return None

    def for_request(self, method: str, resource: str, name: str | None) -> ApiError | None:
        """The error to answer instead of serving this request, if the dice say so."""
        what = f'{resource} "{name}"' if name else resource
        if method in WRITE_METHODS:
            kind = self._roll("conflict", "write_error")
            if kind == "conflict":
                return ApiError(409, "Conflict", f"Operation cannot be fulfilled on {what}: the object has been "
                                "modified; please apply your changes to the latest version and try again")
            if kind == "write_error":
                return ApiError(500, "InternalError", "Internal error occurred: etcdserver: request timed out")
            return None
        if self._roll("read_error"):
            return ApiError(500, "InternalError", "Internal error occurred: etcdserver: leader changed")
        return None

    def watch_cut(self) -> float | None:
        """Seconds after which this watch stream is cut, or None to serve it whole."""
        if not self._roll("watch_drop"):
            return None
        with self._lock:
            return self._rng.uniform(*self.rates.drop_after)


# ---------------------------------------------------------------- the store

Key = tuple[str, str]  # (namespace or "", name)


class KubeEmulator:
    """The store and its HTTP front. Methods without an underscore are also in-process helpers."""

    def __init__(self, port: int | None = None, *, faults: KubeFaults | None = None) -> None:
        self.port = port
        # Opt-in fault injection on the main listener (`url`); the side door (`open_side_door`) never has it.
        self.faults = faults
        self._side_doors: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
        self._cond = threading.Condition()  # the one lock; waiting on it is how watches learn of writes
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {r: {} for r in RESOURCES}
        # (resourceVersion, resource, type, previous state or None, new state)
        self._events: collections.deque[tuple[int, str, str, Any, dict[str, Any]]] = collections.deque(
            maxlen=EVENT_LOG_SIZE)
        self._rv = 1000
        # Watches from a resourceVersion older than this get 410 Gone (`compact`, like etcd's compaction).
        self._compacted = 0
        # How long a watch that asked for bookmarks waits without an event before it gets one.
        self.bookmark_seconds = BOOKMARK_SECONDS
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ---- lifecycle

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the emulator has no port before start()")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self, "faulty": True})
        self._server = LoopbackHTTPServer(("127.0.0.1", self.port or 0), handler)
        self.port = self._server.server_address[1]
        self._stopping = False
        # The socket listens already, so requests queue from here on even before the loop spins.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": SERVE_POLL},
                                        name="kube-emulator", daemon=True)
        self._thread.start()
        return self

    def open_side_door(self) -> str:
        """A second listener on the same store that never injects faults (for a test harness or an
        invariant checker that must see the world, not the weather); returns its URL."""
        handler = type("Handler", (_Handler,), {"emulator": self, "faulty": False})
        server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVE_POLL},
                                  name="kube-emulator-side-door", daemon=True)
        thread.start()
        self._side_doors.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for server, thread in self._side_doors:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._side_doors.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def write_kubeconfig(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        name = "eipdash-sandbox"
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {"token": "sandbox-token"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        }
        # JSON is YAML, so both clients read it; the rename makes it appear whole to whoever polls for it.
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(config, indent=2))
        partial.replace(path)
        return path

    def reset(self) -> None:
        """Forget every object (keeping the resourceVersion counter moving forward) and re-create the
        namespaces every cluster has."""
        with self._cond:
            for objects in self._objects.values():
                objects.clear()
            self._events.clear()
            self._compacted = self._rv  # the history went with the objects
        for namespace in ("default", "kube-system"):
            self.create("namespaces", {"metadata": {"name": namespace}})

    # ---- store operations (all under the lock)

    def create(self, resource: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        kind, namespaced, _, _ = RESOURCES[resource]
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        name = meta.get("name") or (meta["generateName"] + secrets.token_hex(3)[:5]
                                    if meta.get("generateName") else "")
        if not name:
            raise ApiError(422, "Invalid", f"{kind} is invalid: metadata.name: Required value: "
                           "name or generateName is required")
        with self._cond:
            if namespaced:
                namespace = namespace or meta.get("namespace") or "default"
                if meta.get("namespace") not in (None, "", namespace):
                    raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                                   "the namespace sent on the request")
                if ("", namespace) not in self._objects["namespaces"]:
                    raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
                meta["namespace"] = namespace
            key = (namespace or "", name)
            if key in self._objects[resource]:
                raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
            meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now())
            meta.pop("deletionTimestamp", None)
            obj.update(kind=kind, apiVersion=GROUP_VERSIONS.get(resource, "v1"))
            if resource == "events" and len(self._objects["events"]) >= EVENTS_KEPT:
                self._objects["events"].pop(next(iter(self._objects["events"])))
            if resource == "pods":
                obj["status"] = {"phase": "Pending"}  # the kubelet owns status, not the creator
            elif resource == "namespaces":
                obj["status"] = {"phase": "Active"}
            return self._commit(resource, key, "ADDED", None, obj)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._stored(resource, namespace, name))

    def list_objects(self, resource: str, namespace: str | None = None, label_selector: str = "",
                     field_selector: str = "") -> list[dict[str, Any]]:
        return self.list_page(resource, namespace, label_selector, field_selector)["items"]

    def list_page(self, resource: str, namespace: str | None = None, label_selector: str = "",
                  field_selector: str = "", limit: int = 0, continue_token: str = "",
                  resource_version: str = "") -> dict[str, Any]:
        """One page of a list. resource_version "0" is served as the API server serves it from its watch
        cache: whole, whatever `limit` asked (no continue token). A continue token carries its own version,
        so giving one with a resource_version is refused, as by the real server."""
        if continue_token and resource_version:
            raise ApiError(400, "BadRequest", "specifying resource version is not allowed when using continue")
        if resource_version == "0":
            limit = 0
        elif resource_version and not resource_version.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {resource_version!r}")
        matches = _matcher(resource, namespace, label_selector, field_selector)
        start: list[str] | None = None
        list_rv: int | None = None
        if continue_token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, list_rv = list(decoded["start"]), int(decoded["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
        with self._cond:
            list_rv = list_rv or self._rv
            keys = sorted(k for k in self._objects[resource] if start is None or list(k) > start)
            items = [copy.deepcopy(o) for k in keys if matches(o := self._objects[resource][k])]
        metadata: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = {"rv": list_rv, "start": [last.get("namespace", ""), last["name"]]}
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        kind = RESOURCES[resource][0]
        return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": metadata, "items": items}

    def compact(self) -> int:
        """Forget the event history, as etcd's compaction does: a watch from any resourceVersion before now
        gets 410 Gone and must list again. Returns the current resourceVersion."""
        with self._cond:
            self._events.clear()
            self._compacted = self._rv
            return self._rv

    def update(self, resource: str, name: str, change: Callable[[dict[str, Any]], Any],
               namespace: str | None = None, subresource: str | None = None) -> dict[str, Any]:
        """Read-modify-write under the lock: `change` gets a copy of the stored object and returns the new
        one. A metadata.resourceVersion in the result that differs from the stored one is a 409."""
        with self._cond:
            stored = self._stored(resource, namespace, name)
            candidate = change(copy.deepcopy(stored))
            if not isinstance(candidate, dict) or not isinstance(candidate.get("metadata", {}), dict):
                raise ApiError(422, "Invalid", f"{RESOURCES[resource][0]} is invalid: not an object")
            meta, old_meta = candidate.setdefault("metadata", {}), stored["metadata"]
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not match "
                               f"the name on the URL ({name})")
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != old_meta["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the '
                               "object has been modified; please apply your changes to the latest version "
                               "and try again")
            if subresource == "status":
                new = copy.deepcopy(stored)  # the status endpoint changes status only
                new["status"] = candidate.get("status") or {}
            else:
                new = candidate  # ...and the main endpoint everything but status
                new["status"] = copy.deepcopy(stored.get("status") or {})
                for field in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
                    meta.pop(field, None)
                    if field in old_meta:
                        meta[field] = old_meta[field]
            new.update(kind=stored["kind"], apiVersion="v1")
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            key = (namespace or "", name) if RESOURCES[resource][1] else ("", name)
            if new == stored:
                return copy.deepcopy(stored)  # a no-op write keeps its resourceVersion, like the real API
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                return self._commit(resource, key, "DELETED", stored, new)
            return self._commit(resource, key, "MODIFIED", stored, new)

    def patch(self, resource: str, name: str, patch: Any, *, namespace: str | None = None,
              content_type: str = MERGE_PATCH, subresource: str | None = None) -> dict[str, Any]:
        return self.update(resource, name, lambda current: apply_patch(content_type, current, patch),
                           namespace, subresource)

    def delete(self, resource: str, name: str, namespace: str | None = None,
               preconditions: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Returns (object, gone). With finalizers the object stays, marked with a deletionTimestamp."""
        with self._cond:
            stored = self._stored(resource, namespace, name)
            meta, expected = stored["metadata"], preconditions or {}
            for field in ("uid", "resourceVersion"):
                if expected.get(field) not in (None, meta.get(field)):
                    raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": '
                                   f"Precondition failed: {field}: {expected[field]}, "
                                   f"ObjectMeta.{field}: {meta.get(field)}")
            key = (namespace or "", name) if RESOURCES[resource][1] else ("", name)
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(stored), False
                new = copy.deepcopy(stored)
                new["metadata"]["deletionTimestamp"] = _now()
                return self._commit(resource, key, "MODIFIED", stored, new), False
            return self._commit(resource, key, "DELETED", stored, copy.deepcopy(stored)), True

    def set_pod_phase(self, name: str, phase: str, namespace: str = "default") -> dict[str, Any]:
        """What the kubelet would do through the status subresource."""
        return self.patch("pods", name, {"status": {"phase": phase}}, namespace=namespace, subresource="status")

    def _stored(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._objects[resource].get((namespace or "", name) if RESOURCES[resource][1] else ("", name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        return obj

    def _commit(self, resource: str, key: Key, event: str, previous: dict[str, Any] | None,
                new: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        if event == "DELETED":
            self._objects[resource].pop(key, None)
        else:
            self._objects[resource][key] = new
        self._events.append((self._rv, resource, event, previous, copy.deepcopy(new)))
        self._cond.notify_all()
        return copy.deepcopy(new)

    def watch(self, resource: str, namespace: str | None = None, label_selector: str = "",
              field_selector: str = "", resource_version: str = "", timeout: float = DEFAULT_WATCH_SECONDS,
              gone: Callable[[], bool] = lambda: False, bookmarks: bool = False) -> Iterator[dict[str, Any]]:
        """Watch events as dicts; the stream ends after `timeout` seconds, on stop(), or when `gone()`
        says the client left. Bad selectors raise here, before any event (and any HTTP header).

        From a resourceVersion older than the history kept (`compact`, or more than EVENT_LOG_SIZE writes
        ago): one ERROR event with a 410 Status. `bookmarks` (allowWatchBookmarks): a BOOKMARK event, an
        object of the kind with only metadata.resourceVersion, after `bookmark_seconds` without an event
        and as the stream ends, so that a client can resume from there."""
        matches = _matcher(resource, namespace, label_selector, field_selector)
        with self._cond:
            if resource_version in ("", "0"):
                cursor = self._rv
                initial = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for _, o in sorted(self._objects[resource].items()) if matches(o)]
            else:
                try:
                    cursor, initial = int(resource_version), []
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {resource_version!r}") from None
                if cursor < self._compacted or (len(self._events) == self._events.maxlen
                                                and cursor < self._events[0][0] - 1):
                    expired = ApiError(410, "Expired", f"too old resource version: {cursor}")
                    return iter([{"type": "ERROR", "object": expired.status()}])
        return self._watch_events(resource, matches, cursor, initial, time.monotonic() + timeout, gone,
                                  bookmarks)

    def _watch_events(self, resource: str, matches: Callable[[dict[str, Any]], bool], cursor: int,
                      initial: list[dict[str, Any]], deadline: float, gone: Callable[[], bool],
                      bookmarks: bool = False) -> Iterator[dict[str, Any]]:
        yield from initial
        kind = RESOURCES[resource][0]
        api_version = GROUP_VERSIONS.get(resource, "v1")

        def bookmark() -> dict[str, Any]:
            return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                                                   "metadata": {"resourceVersion": str(cursor)}}}

        last_sent = time.monotonic()
        while time.monotonic() < deadline:
            with self._cond:
                if self._rv <= cursor and not self._stopping:
                    wait = deadline - time.monotonic()
                    if bookmarks:
                        wait = min(wait, last_sent + self.bookmark_seconds - time.monotonic())
                    self._cond.wait(min(1.0, max(0.0, wait)))
                if self._stopping:
                    return
                batch = []
                for entry in reversed(self._events):
                    if entry[0] <= cursor:
                        break
                    if entry[1] == resource:
                        batch.append(entry)
                cursor = self._rv
            # A selector-filtered watch reports objects entering or leaving the selection as ADDED or
            # DELETED, as the real watch cache does.
            for _, _, event, previous, obj in reversed(batch):
                now = event != "DELETED" and matches(obj)
                before = previous is not None and matches(obj if event == "DELETED" else previous)
                if now:
                    yield {"type": "MODIFIED" if before else "ADDED", "object": obj}
                    last_sent = time.monotonic()
                elif before:
                    yield {"type": "DELETED", "object": obj}
                    last_sent = time.monotonic()
            if bookmarks and time.monotonic() - last_sent >= self.bookmark_seconds:
                # Also after writes this watch does not show (other resources, other selections): the
                # version moved on, and a client resuming from here skips them.
                yield bookmark()
                last_sent = time.monotonic()
            if gone():
                return
        if bookmarks and not self._stopping:
            yield bookmark()  # the server ends the watch: where to resume


# ---------------------------------------------------------------- HTTP

def _status_success(resource: str, obj: dict[str, Any], code: int = 200) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code,
            "details": {"name": meta.get("name"), "kind": resource, "uid": meta.get("uid")}}


def _api_resource_list() -> dict[str, Any]:
    resources = []
    for name, (kind, namespaced, short, _) in RESOURCES.items():
        if name in GROUP_VERSIONS:
            continue  # served by its API group, not by core/v1
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources.append({"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                          "verbs": verbs, "shortNames": short})
    for resource, sub in sorted(SUBRESOURCES):
        kind, namespaced, _, _ = RESOURCES[resource]
        if sub == "eviction":
            resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "kind": "Eviction",
                              "group": "policy", "version": "v1", "verbs": ["create"]})
        else:
            resources.append({"name": f"{resource}/status", "singularName": "", "namespaced": namespaced,
                              "kind": kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams
    # Headers and body go out in separate writes; with Nagle on, the body waits for the client's delayed
    # ACK (about 40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    emulator: KubeEmulator
    faulty: bool = False  # this listener injects the emulator's faults, when it has any
    _cut_stream: bool = False  # the watch being served is to be cut (an injected drop)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and `make run` would drown in access logs

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self._send(400, ApiError(400, "BadRequest", "the request body is not valid JSON").status())
            return
        try:
            result = self._route(method, [p for p in url.path.split("/") if p], query, body)
        except ApiError as error:
            self._send(error.code, error.status())
            return
        except (ValueError, TypeError, AttributeError) as error:  # malformed input the router did not expect
            self._send(400, ApiError(400, "BadRequest", str(error)).status())
            return
        if isinstance(result, tuple):
            self._send(*result)
        else:
            self._stream(result)

    def _route(self, method: str, path: list[str], query: dict[str, str], body: Any,
               ) -> tuple[int, Any] | Iterator[dict[str, Any]]:
        emulator = self.emulator
        if method == "GET" and path == ["version"]:
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-eipdash", "platform": "linux/amd64"}
        if method == "GET" and path == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{emulator.port}"}]}
        if method == "GET" and path == ["apis"]:
            version = {"groupVersion": "events.k8s.io/v1", "version": "v1"}
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "events.k8s.io", "versions": [version], "preferredVersion": version}]}
        if method == "GET" and path == ["api", "v1"]:
            return 200, _api_resource_list()
        if method == "GET" and path == ["apis", "events.k8s.io", "v1"]:
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1",
                         "resources": [{"name": "events", "singularName": "event", "namespaced": True,
                                        "kind": "Event", "shortNames": ["ev"],
                                        "verbs": ["create", "delete", "get", "list", "patch", "update",
                                                  "watch"]}]}
        # A grouped resource answers only under its group's path, a core one only under /api/v1.
        group_version = "v1"
        if len(path) >= 3 and path[0] == "apis" and "/".join(path[1:3]) in GROUP_VERSIONS.values():
            group_version, path = "/".join(path[1:3]), ["api", "v1", *path[3:]]
        if path[:2] != ["api", "v1"] or len(path) < 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource_at = path[4] if len(path) >= 5 and path[2] == "namespaces" else path[2]
        if resource_at in RESOURCES and GROUP_VERSIONS.get(resource_at, "v1") != group_version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rest, namespace = path[2:], None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in RESOURCES and RESOURCES[rest[2]][1]:
            namespace, rest = rest[1], rest[2:]
        resource, name = rest[0], rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (resource not in RESOURCES or len(rest) > 3 or (sub and (resource, sub) not in SUBRESOURCES)
                or (name and RESOURCES[resource][1] and namespace is None)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        faults = emulator.faults if self.faulty else None
        watching = name is None and method == "GET" and query.get("watch") in ("1", "true")
        if faults is not None and not watching:
            injected = faults.for_request(method, resource, name)
            if injected is not None:
                raise injected
        not_allowed = ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
        if name is None:
            if watching:
                timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
                cut = faults.watch_cut() if faults is not None else None
                if cut is not None and cut < timeout:
                    timeout, self._cut_stream = cut, True
                # A stream that is to be cut gets no bookmark: a cut is not the server ending the watch.
                bookmarks = query.get("allowWatchBookmarks") in ("1", "true") and not self._cut_stream
                return emulator.watch(resource, namespace, query.get("labelSelector", ""),
                                      query.get("fieldSelector", ""), query.get("resourceVersion", ""),
                                      timeout, self._gone, bookmarks)
            if method == "GET":
                return 200, emulator.list_page(resource, namespace, query.get("labelSelector", ""),
                                               query.get("fieldSelector", ""), int(query.get("limit") or 0),
                                               query.get("continue", ""), query.get("resourceVersion", ""))
            if method == "POST" and (namespace is not None or not RESOURCES[resource][1]):
                return 201, emulator.create(resource, body, namespace)
            raise not_allowed
        if sub == "eviction":
            if method != "POST":
                raise not_allowed
            obj, _ = emulator.delete(resource, name, namespace)
            return 201, _status_success(resource, obj, 201)
        if method == "GET":
            return 200, emulator.get(resource, name, namespace)
        if resource == "namespaces" and method != "GET":
            raise not_allowed  # namespaces are fixed furniture here
        if method == "PUT":
            return 200, emulator.update(resource, name, lambda _: copy.deepcopy(body), namespace, sub)
        if method == "PATCH":
            return 200, emulator.patch(resource, name, body, namespace=namespace,
                                       content_type=self.headers.get("Content-Type", ""), subresource=sub)
        if method == "DELETE" and sub is None:
            preconditions = (body or {}).get("preconditions") if isinstance(body, dict) else None
            obj, gone = emulator.delete(resource, name, namespace, preconditions)
            # Real nodes answer a Status on immediate deletion, pods the deleted object.
            return 200, _status_success(resource, obj) if gone and resource == "nodes" else obj
        raise not_allowed

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            if self._cut_stream:
                # An injected drop: the stream ends without its closing chunk, as when a load balancer or
                # an API server restart cuts it; the client sees a broken response, not a clean end.
                self._cut_stream = False
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the client left first
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _gone(self) -> bool:
        """True once the client closed its end: a readable socket with nothing to read."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, 0x2) == b""  # 0x2 = MSG_PEEK
        except OSError:
            return True



def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Kubernetes API emulator on loopback (Ctrl-C stops).")
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the emulator to this path")
    chaos = parser.add_argument_group("fault injection (off unless a rate is given)")
    chaos.add_argument("--fault-seed", type=int, default=1)
    chaos.add_argument("--conflict", type=float, default=0.0, help="probability of a 409 per write")
    chaos.add_argument("--write-error", type=float, default=0.0, help="probability of a 500 per write")
    chaos.add_argument("--read-error", type=float, default=0.0, help="probability of a 500 per get or list")
    chaos.add_argument("--watch-drop", type=float, default=0.0, help="probability that a watch stream is cut")
    args = parser.parse_args()
    rates = KubeFaultRates(conflict=args.conflict, write_error=args.write_error, read_error=args.read_error,
                           watch_drop=args.watch_drop)
    faulty = any((args.conflict, args.write_error, args.read_error, args.watch_drop))
    emulator = KubeEmulator(args.port, faults=KubeFaults(rates, args.fault_seed) if faulty else None)
    # Ctrl-C (SIGINT) stops it even when its parent ignored or blocked SIGINT (sandbox/signals.py).
    on_stop_signals(signal.default_int_handler, (signal.SIGINT,))
    # As in the EC2 emulator: a Ctrl-C at any point after this stops the server cleanly and exits 0.
    try:
        try:
            emulator.start()
        except OSError as error:
            # A taken port: the reason and a non-zero exit at once, not a traceback.
            print(f"Kubernetes API emulator: cannot listen on 127.0.0.1:{args.port}: {os.strerror(error.errno or 0)}",
                  file=sys.stderr)
            raise SystemExit(1) from None
        if args.kubeconfig:
            emulator.write_kubeconfig(args.kubeconfig)
        # The "ready" signal: printed once the server answers and the kubeconfig is whole.
        print(f"Kubernetes API emulator on {emulator.url}", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
