"""Kubeconfig files named by cluster rows: where they may be, and what they may hold.

A superuser names the file (the admin, `manage.py cluster add`) and the web checks it when the row is saved; the
workers check what it holds again at every load (workers/kube.py), since the file can change after it was saved
(its place is checked at saving only: a row saved before this rule keeps its path). The rules:

- the path, resolved (symlinks, ".."), must be under EIPDASH_KUBECONFIG_DIR, and a path outside is refused in
  the same words whether it exists or not: the form must not tell whether /etc/shadow exists;
- the file must be a kubeconfig the Kubernetes client can load (a YAML mapping, its lists well formed, the
  context the row selects present with its cluster and user);
- no user may run a command for its credentials (`exec`) unless EIPDASH_KUBECONFIG_ALLOW_EXEC is true, and
  none may use an `auth-provider` (see `user_problems`): loading the file would run that command in the workers.

Messages name the path and the file's entry names, never its values (tokens, keys), and never the resolved path
(it would tell where a symlink points). Pure: no Kubernetes client (the web runs without it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from django.conf import settings

from .specfile import KUBECONFIG_MAX, control_problem

# A kubeconfig is a few kilobytes; a file past this is not one, and is not read whole into memory.
MAX_BYTES = 1 << 20
# The entry of each list: clusters[].cluster, contexts[].context, users[].user.
LISTS = {"clusters": "cluster", "contexts": "context", "users": "user"}


class KubeconfigUnreadable(ValueError):
    """The file cannot be read or parsed; the message says why in words."""


def kubeconfig_identity(path: str) -> str:
    """The file a kubeconfig path names, for overlap checks: its resolved real path ("" for none)."""
    return os.path.realpath(path) if path else ""


def kubeconfig_problem(path: str) -> str | None:
    """Why a cluster row may not name this kubeconfig file, whatever its kube context; None when it may.

    `context_problem` adds the check of the context the row selects."""
    return _checked(path)[1]


def context_problem(path: str, kube_context: str) -> str | None:
    """Why the row's kube context ("" = the file's current-context) cannot be used from this file; None when
    it can, or when the file itself is refused (`kubeconfig_problem` says why, once)."""
    config, problem = _checked(path)
    if config is None or problem is not None:
        return None
    return selection_problem(config, kube_context, shown=path)


def _checked(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """The file's content (None when there is no path, or it cannot be read) and what is wrong with it."""
    if not path:
        return None, None
    real, problem = _resolved(path)
    if problem:
        return None, problem
    try:
        config = read(real, shown=path)  # the resolved path that was checked, not a second resolution
    except KubeconfigUnreadable as exc:
        return None, str(exc)
    return config, "; ".join(file_problems(config, shown=path)) or None


def path_problem(path: str) -> str | None:
    """The path must be absolute (the workers do not share the admin's working directory), under
    EIPDASH_KUBECONFIG_DIR once resolved, and a file."""
    return _resolved(path)[1]


def _resolved(path: str) -> tuple[str, str | None]:
    """The path resolved (symlinks, ".."), and why it is refused (None when it is not)."""
    if problem := control_problem("kubeconfig", path):
        return "", problem
    if len(path) > KUBECONFIG_MAX:
        return "", f"kubeconfig must be a path of at most {KUBECONFIG_MAX} characters"
    if not os.path.isabs(path):
        return "", f"kubeconfig {path!r} must be an absolute path"
    directory = str(settings.EIPDASH_KUBECONFIG_DIR)
    if not directory:
        return "", ("kubeconfig files are turned off (EIPDASH_KUBECONFIG_DIR is empty): leave kubeconfig empty "
                    "to use the workers' own kubeconfig (with a kube context), or set EIPDASH_KUBECONFIG_DIR")
    if not os.path.isabs(directory):
        return "", f"EIPDASH_KUBECONFIG_DIR {directory!r} must be an absolute path"
    # Compared resolved: a symlink or a ".." inside the directory must not lead out of it. Nothing is said
    # about a path outside beyond that: not whether it exists, not where it resolves to.
    real, base = os.path.realpath(path), os.path.realpath(directory)
    if real == base or os.path.commonpath([real, base]) != base:
        return "", f"kubeconfig {path!r} is not a file under EIPDASH_KUBECONFIG_DIR ({directory})"
    if not os.path.isfile(real):
        return "", f"kubeconfig {path!r} does not exist (or is not a file)"
    return real, None


def read(path: str, *, shown: str | None = None) -> dict[str, Any]:
    """The file's YAML as a mapping. `shown`: the path as the messages name it (default: `path`).

    A parse error is said by its position, never by a snippet of the text: the file holds credentials."""
    shown = path if shown is None else shown
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise KubeconfigUnreadable(f"kubeconfig {shown!r} cannot be read ({exc.strerror or type(exc).__name__})") \
            from None
    if len(data) > MAX_BYTES:
        raise KubeconfigUnreadable(f"kubeconfig {shown!r} is larger than {MAX_BYTES // 1024} KiB: not a kubeconfig")
    try:
        config = yaml.safe_load(data)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KubeconfigUnreadable(f"kubeconfig {shown!r} is not valid YAML{where}") from None
    except (yaml.YAMLError, RecursionError):  # not UTF-8 text, nested past the parser's depth
        raise KubeconfigUnreadable(f"kubeconfig {shown!r} is not valid YAML") from None
    if not isinstance(config, dict):
        raise KubeconfigUnreadable(f"kubeconfig {shown!r} is not a kubeconfig (a YAML mapping with clusters, "
                                   "contexts and users)")
    return config


def file_problems(config: Mapping[str, Any], *, shown: str) -> list[str]:
    """What is wrong with the file whatever context is used: malformed lists, refused credentials."""
    problems: list[str] = []
    for key in LISTS:
        problems += [f"kubeconfig {shown!r}: {problem}" for problem in _list_problems(config, key)]
    for entry in _entries(config, "users").values():
        problems += [f"kubeconfig {shown!r}: {problem}" for problem in user_problems(entry)]
    return problems


def selection_problem(config: Mapping[str, Any], kube_context: str, *, shown: str) -> str | None:
    """The context the client will use (`kube_context`, else current-context), and the cluster and user it
    names, exist; the cluster has a server. None when they do."""
    name = kube_context or config.get("current-context")
    if not name or not isinstance(name, str):
        return f"kubeconfig {shown!r} has no current-context: give the cluster a kube context"
    contexts = _entries(config, "contexts")
    if name not in contexts:
        known = ", ".join(repr(n) for n in sorted(contexts)) or "none"
        return f"kubeconfig {shown!r} has no context {name!r} (it has: {known})"
    context = contexts[name].get("context")
    cluster_name = context.get("cluster") if isinstance(context, dict) else None
    clusters = _entries(config, "clusters")
    if not isinstance(cluster_name, str) or cluster_name not in clusters:
        return f"kubeconfig {shown!r}: context {name!r} names no cluster of the file"
    cluster = clusters[cluster_name].get("cluster")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("server"), str) or not cluster["server"]:
        return f"kubeconfig {shown!r}: cluster {cluster_name!r} has no server"
    user_name = context.get("user") if isinstance(context, dict) else None
    if user_name is not None and (not isinstance(user_name, str) or user_name not in _entries(config, "users")):
        # The client would go on without credentials, and every call would be refused.
        return f"kubeconfig {shown!r}: context {name!r} names user {user_name!r}, which the file does not have"
    return None


def user_problems(entry: Mapping[str, Any]) -> list[str]:
    """Credentials that make loading the file run something in the workers.

    `exec` runs a command for each load (aws eks get-token, gke-gcloud-auth-plugin): allowed only when the
    operator says so (EIPDASH_KUBECONFIG_ALLOW_EXEC), since the superuser who picks the file may not be the
    operator who may run commands on the workers. `auth-provider` is refused even then: its `gcp` form runs its
    `cmd-path` (a command outside that setting's control), its `oidc` form calls the issuer URL the file names
    and writes refreshed tokens back into the file; Kubernetes itself replaced both with exec plugins (kubectl
    dropped the gcp and azure providers in 1.26), which the setting covers."""
    user = entry.get("user")
    if not isinstance(user, dict):
        return []  # _list_problems says it
    name = entry.get("name")
    problems = []
    # Present at all, as the client tests it ("exec" in user), whatever its value.
    if "exec" in user and not settings.EIPDASH_KUBECONFIG_ALLOW_EXEC:
        problems.append(f"user {name!r} runs a command for its credentials (an exec plugin), refused unless "
                        "EIPDASH_KUBECONFIG_ALLOW_EXEC is true")
    if "auth-provider" in user:
        problems.append(f"user {name!r} uses an auth-provider, which is refused: use a token, a client "
                        "certificate or an exec plugin")
    return problems


def _list_problems(config: Mapping[str, Any], key: str) -> list[str]:
    """clusters, contexts and users are lists of {name, <entry>} with unique names, as the client reads them."""
    items = config.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        return [f"{key} must be a list"]
    seen: set[str] = set()
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            return [f"{key}[{index}] must be a mapping with a name"]
        if not isinstance(item.get(LISTS[key]), dict):
            return [f"{key} entry {name!r} must have a {LISTS[key]} mapping"]
        if name in seen:
            return [f"{key} has two entries named {name!r}"]
        seen.add(name)
    return []


def _entries(config: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """The well-formed entries of a list by name (the malformed ones are `_list_problems`' to report)."""
    items = config.get(key)
    if not isinstance(items, list):
        return {}
    return {item["name"]: item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)}
