"""Launch-spec input: Spot Ocean's launch-spec JSON in, validated plain values out.

`launchspec apply`, the dashboard form and the import page all go through `parse_launch_spec`, so a
spec that one of them accepts, the others accept too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .regions import KNOWN_REGIONS

# Every pattern is used with fullmatch: with match and `$`, a trailing newline would pass ("egress\n").
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# Kubernetes: a label name is 1-63 alphanumerics with - _ . inside; a prefix is a DNS subdomain.
LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# The database's column sizes (pools/models.py): validation refuses what the database would cut or refuse.
NAME_MAX = 253
CLUSTER_NAME_MAX = 100
KUBE_CONTEXT_MAX = 200
KUBECONFIG_MAX = 500
TAG_KEY_MAX = 128
TAG_VALUE_MAX = 256
# elasticIpPool.minFree: more headroom than any region's EIP quota allows is a typo, not a plan.
MIN_FREE_MAX = 10_000
# Names that are routes under /launch-specs/: a spec called "new" would be unreachable.
RESERVED_NAMES = frozenset({"new", "import"})
# Characters that must never reach a page, a shell script or a log line from user input: C0 controls
# (newline, CR, NUL, ...), DEL, C1 controls, the Unicode line and paragraph separators, and the bidi
# marks, embeddings, overrides and isolates that make text display in another order than it runs; and
# unpaired surrogates (JSON's "\ud800"), which no database column can store as UTF-8.
CONTROL_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def control_problem(what: str, value: object) -> str | None:
    """A message when `value` holds a control or bidi character, else None."""
    if isinstance(value, str) and (found := CONTROL_RE.search(value)):
        return f"{what} must not contain control, bidi or surrogate characters (found U+{ord(found.group()):04X})"
    return None


def name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        return control_problem("name", value) or (
            f"name is required: 1-{NAME_MAX} characters, letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if value.lower() in RESERVED_NAMES:
        return f"name {value!r} is reserved (it is a page of the dashboard)"
    return None


def cluster_name_problem(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > CLUSTER_NAME_MAX or not NAME_RE.fullmatch(value):
        return control_problem("cluster", value) or (
            f"cluster must be a name of 1-{CLUSTER_NAME_MAX} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return None


def kube_context_problem(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > KUBE_CONTEXT_MAX:
        return f"kube context must be a string of at most {KUBE_CONTEXT_MAX} characters"
    return control_problem("kube context", value)


class SpecFileError(ValueError):
    """Bad launch-spec input. `messages` lists every problem found, not only the first."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclass(frozen=True)
class LaunchSpecInput:
    name: str
    labels: dict[str, str]
    tag_key: str
    tag_value: str | None
    cluster: str | None = None
    region: str | None = None
    enabled: bool = True
    # elasticIpPool.minFree: the headroom (free EIPs) below which the pool_low alert is raised.
    min_free: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def label_key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return "a label key must be a non-empty string"
    if problem := control_problem("a label key", key):
        return problem
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain of at most 253 characters"
    if not LABEL_NAME_RE.fullmatch(name):
        return (
            f"label key {key!r}: the name must be 1-63 characters, alphanumeric at both ends, "
            "with only - _ . inside"
        )
    return None


def label_value_problem(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"label {key!r}: the value must be a string"
    if problem := control_problem(f"label {key!r}: the value", value):
        return problem
    if value and not LABEL_NAME_RE.fullmatch(value):
        return (
            f"label {key!r}: value {value!r} must be at most 63 characters, alphanumeric at both ends, "
            "with only - _ . inside"
        )
    return None


def tag_problems(tag_key: object, tag_value: object) -> list[str]:
    problems = []
    if not isinstance(tag_key, str) or not 1 <= len(tag_key) <= TAG_KEY_MAX:
        problems.append(f"elasticIpPool.tagSelector.tagKey must be a string of 1-{TAG_KEY_MAX} characters")
    elif tag_key.lower().startswith("aws:"):
        problems.append("elasticIpPool.tagSelector.tagKey must not start with 'aws:' (reserved by AWS)")
    elif problem := control_problem("elasticIpPool.tagSelector.tagKey", tag_key):
        problems.append(problem)
    if tag_value is not None and (not isinstance(tag_value, str) or len(tag_value) > TAG_VALUE_MAX):
        problems.append(
            f"elasticIpPool.tagSelector.tagValue must be a string of at most {TAG_VALUE_MAX} characters"
        )
    elif problem := control_problem("elasticIpPool.tagSelector.tagValue", tag_value):
        problems.append(problem)
    return problems


def min_free_problem(value: object) -> str | None:
    # bool is an int in Python: `true` is not a number of EIPs.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MIN_FREE_MAX:
        return (f"elasticIpPool.minFree must be a whole number from 0 to {MIN_FREE_MAX} (the free EIPs to keep as "
                f"headroom), not {_short(value)}")
    return None


def _labels_from(raw: object, problems: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    if isinstance(raw, dict):
        # Accept the plain {"key": "value"} form too; the dashboard form produces it.
        raw = [{"key": k, "value": v} for k, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        problems.append("labels must list at least one {key, value}: a spec without labels would match every node")
        return labels
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or "key" not in item:
            problems.append(f"labels[{index}] must be an object with 'key' and 'value'")
            continue
        key, value = item.get("key"), item.get("value", "")
        problem = label_key_problem(key)
        if problem is None and isinstance(key, str):
            problem = label_value_problem(key, value)
        if problem:
            problems.append(problem)
        elif key in labels and labels[key] != value:
            problems.append(f"label {key!r} is given twice with different values")
        else:
            labels[str(key)] = str(value)
    return labels


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A launch spec is four levels deep; anything far deeper is not one, and Python's json recursion would fail.
MAX_JSON_DEPTH = 20


def _depth(value: object) -> int:
    """Nesting depth, iteratively: a recursive walk would itself overflow on hostile input."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_JSON_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def load_spec_json(raw: bytes | str) -> object:
    """Decode launch-spec JSON; every way it can be bad ends in a one-line SpecFileError."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecFileError([f"not UTF-8: invalid byte at position {exc.start}"]) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecFileError([f"not valid JSON: {exc}"]) from None
    except ValueError:
        # Python refuses integers of more than 4300 digits while decoding.
        raise SpecFileError(["not valid JSON: a number is too long"]) from None
    except RecursionError:
        raise SpecFileError([f"JSON nested deeper than {MAX_JSON_DEPTH} levels"]) from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise SpecFileError([f"JSON nested deeper than {MAX_JSON_DEPTH} levels"])
    return data


def parse_launch_spec(data: object, *, default_cluster: str | None = None) -> LaunchSpecInput:
    """Validate Ocean launch-spec JSON (`{"launchSpec": {...}}` or the bare object)."""
    if isinstance(data, dict) and isinstance(data.get("launchSpec"), dict):
        data = data["launchSpec"]
    if not isinstance(data, dict):
        raise SpecFileError(["expected a JSON object: a launch spec or {\"launchSpec\": {...}}"])

    problems: list[str] = []
    name = data.get("name")
    if problem := name_problem(name):
        problems.append(problem)
    labels = _labels_from(data.get("labels"), problems)

    pool = data.get("elasticIpPool")
    selector = pool.get("tagSelector") if isinstance(pool, dict) else None
    min_free = pool.get("minFree", 0) if isinstance(pool, dict) else 0
    if problem := min_free_problem(min_free):
        problems.append(problem)
    if not isinstance(selector, dict):
        problems.append("elasticIpPool.tagSelector is required, with tagKey and optionally tagValue")
        tag_key: Any = None
        tag_value: Any = None
    else:
        tag_key = selector.get("tagKey")
        tag_value = selector.get("tagValue")
        if tag_value == "":
            tag_value = None
        problems.extend(tag_problems(tag_key, tag_value))

    region = data.get("region")
    if region is not None and (not isinstance(region, str) or region not in KNOWN_REGIONS):
        # Shown short: a wrong type (a list, an object) would otherwise be echoed whole.
        problems.append(f"region {_short(region)} is not a known AWS region")
    cluster = data.get("cluster", default_cluster)
    if cluster is not None and (problem := cluster_name_problem(cluster)):
        problems.append(problem)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append("enabled must be true or false")

    if problems:
        raise SpecFileError(problems)
    known = {"name", "labels", "elasticIpPool", "region", "cluster", "enabled"}
    return LaunchSpecInput(
        name=str(name),
        labels=labels,
        tag_key=str(tag_key),
        tag_value=tag_value,
        cluster=cluster,
        region=region,
        enabled=enabled,
        min_free=min_free,
        extra={k: v for k, v in data.items() if k not in known},
    )


def launch_spec_to_ocean(spec: Any, *, min_free: bool = True) -> dict[str, Any]:
    """The spec as Ocean launch-spec JSON, with eipdash's own fields (region, cluster) beside.

    min_free=False leaves out `elasticIpPool.minFree`, an eipdash extension inside Ocean's own object: the
    "Export Ocean JSON" download is meant for Ocean, which does not know it. The API and the import's diff keep it,
    so that a GET then PUT changes nothing; they show it only when it is set (0 is the default), so a document
    without headroom reads as it did before minFree existed."""
    selector: dict[str, str] = {"tagKey": spec.tag_key}
    if spec.tag_value is not None:
        selector["tagValue"] = spec.tag_value
    pool: dict[str, Any] = {"tagSelector": selector}
    if min_free and spec.min_free:
        pool["minFree"] = spec.min_free
    return {
        "launchSpec": {
            "name": spec.name,
            "labels": [{"key": k, "value": v} for k, v in sorted(spec.labels.items())],
            "elasticIpPool": pool,
            "region": spec.cluster.region,
            "cluster": spec.cluster.name,
            "enabled": spec.enabled,
        }
    }
