"""Which EIPs and which nodes a launch spec selects: the one home of these rules.

The pool of a spec is every EIP of its cluster's region tagged `tag_key` (any value), or `tag_key=tag_value`
when a value is given: Ocean's `elasticIpPool.tagSelector`. A node belongs to a spec when it carries all of
the spec's labels. The Python predicate and its SQL twin sit side by side here so that they cannot drift
apart (tests/pools/test_pool_rule.py runs both on the same rows, on SQLite and PostgreSQL).

The planner stays pure: it never selects by itself, it gets the pool and the rivals computed from here.
This module imports Django only inside pool_filter, so that the adapters (workers/kube.py builds its label
selector with labels_text) and the sandbox can use it without a configured Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from .models import ElasticIP, LaunchSpec


class TagSelector(Protocol):
    """Anything with a spec's tag selector: a LaunchSpec row or a planner SpecView."""

    @property
    def tag_key(self) -> str: ...
    @property
    def tag_value(self) -> str | None: ...


S = TypeVar("S", bound=TagSelector)


def tag_selects(tags: Mapping[str, str], tag_key: str, tag_value: str | None) -> bool:
    """Ocean's tagSelector: the key alone selects any value (the empty one too); key and value select exactly."""
    if tag_key not in tags:
        return False
    return tag_value is None or tags[tag_key] == tag_value


def selects(spec: TagSelector, tags: Mapping[str, str] | None) -> bool:
    """The spec's tag selector on one EIP's tags (the region is the caller's: see in_pool)."""
    return tag_selects(tags or {}, spec.tag_key, spec.tag_value)


def in_pool(spec: LaunchSpec, *, region: str, tags: Mapping[str, str] | None) -> bool:
    """The whole pool rule in Python: the spec's region and its tag selector. Twin of pool_filter."""
    return region == spec.cluster.region and selects(spec, tags)


def pool_filter(qs: QuerySet[ElasticIP], spec: LaunchSpec) -> QuerySet[ElasticIP]:
    """The whole pool rule in SQL, one query for one spec. Twin of in_pool."""
    from django.db.models import TextField
    from django.db.models.fields.json import KeyTextTransform
    from django.db.models.functions import Cast

    qs = qs.filter(region=spec.cluster.region, tags__has_key=spec.tag_key)
    if spec.tag_value is not None:
        # KeyTextTransform quotes the key as a JSON path, so keys with dots or slashes are safe.
        # Cast: a bare KeyTextTransform would compare with JSON semantics and expect JSON on the right.
        value = Cast(KeyTextTransform(spec.tag_key, "tags"), output_field=TextField())
        qs = qs.alias(pool_tag_value=value).filter(pool_tag_value=spec.tag_value)
    return qs


def specs_selecting(tags: Mapping[str, str] | None, specs: Iterable[S]) -> list[S]:
    """Which of these specs select an EIP with these tags; more than one of one region is a conflict.
    The caller passes the specs of the EIP's region."""
    return [s for s in specs if selects(s, tags)]


def labels_match(required: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A node belongs to a spec when it carries every one of the spec's labels."""
    return all(labels.get(key) == value for key, value in required.items())


def labels_text(labels: Mapping[str, str] | None, separator: str = ",") -> str:
    """`key=value,key=value`, sorted: a Kubernetes label selector, and how pages and commands show labels."""
    return separator.join(f"{key}={value}" for key, value in sorted((labels or {}).items()))
