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

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PoolSelector:
    """Where a spec's pool comes from: its cluster's region and its tag selector."""

    region: str
    tag_key: str
    tag_value: str | None

    def selects(self, region: str, tags: Mapping[str, str] | None) -> bool:
        return region == self.region and tag_selects(tags or {}, self.tag_key, self.tag_value)


@dataclass(frozen=True)
class RegionAddress:
    """One EIP of a region as the last pass saw it, and where it is now in words ("unmanaged", "on node n1")."""

    allocation_id: str
    public_ip: str
    region: str
    tags: Mapping[str, str]
    now: str


POOL_CHANGES_LIMIT = 20


def pool_changes(old: PoolSelector | None, new: PoolSelector | None, addresses: Iterable[RegionAddress], *,
                 limit: int = POOL_CHANGES_LIMIT) -> list[str]:
    """What a new selector does to a spec's pool, EIP by EIP, said before it is applied (the sync's diff, the
    import page's, the API's PUT): "+ pool takes IP (allocation), now unmanaged" for each EIP that `new` selects
    and `old` does not, "- pool lets go of IP (allocation), now on node n1" the other way round. None: no spec
    (created) or no selector (deleted). In IP order, at most `limit` lines each way, then how many more."""
    taken: list[RegionAddress] = []
    let_go: list[RegionAddress] = []
    for address in addresses:
        before = old is not None and old.selects(address.region, address.tags)
        after = new is not None and new.selects(address.region, address.tags)
        if after and not before:
            taken.append(address)
        elif before and not after:
            let_go.append(address)
    lines: list[str] = []
    for verb, chosen in (("takes", taken), ("lets go of", let_go)):
        sign = "+" if chosen is taken else "-"
        chosen.sort(key=lambda a: (ipaddress.ip_address(a.public_ip), a.allocation_id))
        lines += [f"{sign} pool {verb} {a.public_ip} ({a.allocation_id}), now {a.now}" for a in chosen[:limit]]
        if len(chosen) > limit:
            lines.append(f"{sign} pool {verb} {len(chosen) - limit} more EIPs")
    return lines
