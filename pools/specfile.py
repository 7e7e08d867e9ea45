"""Launch-spec input: Spot Ocean's launch-spec JSON in, validated plain values out.

`launchspec apply`, the dashboard form and the import page all go through `parse_launch_spec`, so a
spec that one of them accepts, the others accept too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .regions import KNOWN_REGIONS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
# Kubernetes: a label name is 1-63 alphanumerics with - _ . inside; a prefix is a DNS subdomain.
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def label_key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return "a label key must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN_RE.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain of at most 253 characters"
    if not LABEL_NAME_RE.match(name):
        return (
            f"label key {key!r}: the name must be 1-63 characters, alphanumeric at both ends, "
            "with only - _ . inside"
        )
    return None


def label_value_problem(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"label {key!r}: the value must be a string"
    if value and not LABEL_NAME_RE.match(value):
        return (
            f"label {key!r}: value {value!r} must be at most 63 characters, alphanumeric at both ends, "
            "with only - _ . inside"
        )
    return None


def tag_problems(tag_key: object, tag_value: object) -> list[str]:
    problems = []
    if not isinstance(tag_key, str) or not 1 <= len(tag_key) <= 128:
        problems.append("elasticIpPool.tagSelector.tagKey must be 1-128 characters")
    elif tag_key.lower().startswith("aws:"):
        problems.append("elasticIpPool.tagSelector.tagKey must not start with 'aws:' (reserved by AWS)")
    if tag_value is not None and (not isinstance(tag_value, str) or len(tag_value) > 256):
        problems.append("elasticIpPool.tagSelector.tagValue must be a string of at most 256 characters")
    return problems


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
        problem = label_key_problem(key) or label_value_problem(str(key), value)
        if problem:
            problems.append(problem)
        elif key in labels and labels[key] != value:
            problems.append(f"label {key!r} is given twice with different values")
        else:
            labels[str(key)] = str(value)
    return labels


def parse_launch_spec(data: object, *, default_cluster: str | None = None) -> LaunchSpecInput:
    """Validate Ocean launch-spec JSON (`{"launchSpec": {...}}` or the bare object)."""
    if isinstance(data, dict) and isinstance(data.get("launchSpec"), dict):
        data = data["launchSpec"]
    if not isinstance(data, dict):
        raise SpecFileError(["expected a JSON object: a launch spec or {\"launchSpec\": {...}}"])

    problems: list[str] = []
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            "name is required: 1-253 characters, letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    labels = _labels_from(data.get("labels"), problems)

    pool = data.get("elasticIpPool")
    selector = pool.get("tagSelector") if isinstance(pool, dict) else None
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
    if region is not None and region not in KNOWN_REGIONS:
        problems.append(f"region {region!r} is not a known AWS region")
    cluster = data.get("cluster", default_cluster)
    if cluster is not None and (not isinstance(cluster, str) or not NAME_RE.match(cluster)):
        problems.append("cluster must be a name of letters, digits, '.', '_' or '-'")
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
        extra={k: v for k, v in data.items() if k not in known},
    )


def launch_spec_to_ocean(spec: Any) -> dict[str, Any]:
    """The spec as Ocean launch-spec JSON, with eipdash's own fields (region, cluster) beside."""
    selector: dict[str, str] = {"tagKey": spec.tag_key}
    if spec.tag_value is not None:
        selector["tagValue"] = spec.tag_value
    return {
        "launchSpec": {
            "name": spec.name,
            "labels": [{"key": k, "value": v} for k, v in sorted(spec.labels.items())],
            "elasticIpPool": {"tagSelector": selector},
            "region": spec.cluster.region,
            "cluster": spec.cluster.name,
            "enabled": spec.enabled,
        }
    }
