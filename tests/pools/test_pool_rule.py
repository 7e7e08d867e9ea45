"""The pool rule: the Python predicate and its SQL twin select the same rows (run on SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools

import pytest
from django.utils import timezone

from pools.models import Cluster, ElasticIP, LaunchSpec
from pools.pool_rule import (
    PoolSelector,
    RegionAddress,
    in_pool,
    labels_match,
    labels_text,
    pool_changes,
    pool_filter,
    specs_selecting,
    tag_selects,
)

pytestmark = pytest.mark.django_db

# Tag keys of every character class AWS allows in one (letters of any script, digits, spaces, _ . : / = + - @),
# which JSON paths must quote; case differs between two of them. AWS refuses a double quote in a tag key, and
# SQLite's JSON path cannot hold one: no EIP can carry such a tag.
KEYS = ["pool", "eipdash.io/pool", "a:b", "a b", "k=v+@-_", "ünï", "Pool"]
VALUES = ["x", "", "X", "x.y/z", "ünï", "1", "true", "null"]


def test_tag_selector_key_alone_matches_any_value_and_key_value_matches_exactly() -> None:
    assert tag_selects({"pool": "x"}, "pool", None)
    assert tag_selects({"pool": ""}, "pool", None)
    assert tag_selects({"pool": ""}, "pool", "")
    assert tag_selects({"pool": "x"}, "pool", "x")
    assert not tag_selects({"pool": "x"}, "pool", "")
    assert not tag_selects({"pool": "y"}, "pool", "x")
    assert not tag_selects({"other": "x"}, "pool", None)
    assert not tag_selects({"Pool": "x"}, "pool", None)  # tag keys are case-sensitive in AWS


def test_python_predicate_and_sql_twin_select_the_same_rows() -> None:
    east = Cluster.objects.create(name="east", region="us-east-1")
    west = Cluster.objects.create(name="west", region="us-west-2")
    rows = []
    number = itertools.count(1)
    tag_sets: list[dict[str, str]] = [{}, {"unrelated": "x"}]
    tag_sets += [{key: value} for key in KEYS for value in VALUES]
    tag_sets += [{"pool": "x", "eipdash.io/pool": ""}, {"pool": "", "Pool": "x"}]
    for region in ("us-east-1", "us-west-2"):
        for tags in tag_sets:
            n = next(number)
            rows.append(ElasticIP.objects.create(allocation_id=f"eipalloc-{n}", region=region,
                                                 public_ip=f"198.51.{n // 250}.{n % 250}", tags=tags,
                                                 last_seen_at=timezone.now()))
    specs: list[LaunchSpec] = []
    for cluster, key, value in itertools.product((east, west), KEYS, [None, *VALUES]):
        specs.append(LaunchSpec.objects.create(name=f"s{len(specs)}", cluster=cluster, labels={"a": "b"},
                                               tag_key=key, tag_value=value))
    assert len(specs) > 100
    every = ElasticIP.objects.all()
    for spec in LaunchSpec.objects.select_related("cluster"):
        in_python = {row.allocation_id for row in rows if in_pool(spec, region=row.region, tags=row.tags)}
        in_sql = set(pool_filter(every, spec).values_list("allocation_id", flat=True))
        assert in_python == in_sql, (spec.tag_key, spec.tag_value, spec.cluster.region)
    # Not vacuous: the empty value selects exactly the rows of its region whose tag is empty.
    empty = LaunchSpec.objects.select_related("cluster").get(cluster=east, tag_key="pool", tag_value="")
    assert sorted(sorted(row.tags.items()) for row in pool_filter(every, empty)) == [
        [("Pool", "x"), ("pool", "")], [("pool", "")]]


def test_specs_selecting_names_every_rival_of_the_region() -> None:
    east = Cluster.objects.create(name="east", region="us-east-1")
    exact = LaunchSpec.objects.create(name="exact", cluster=east, labels={"a": "b"}, tag_key="pool", tag_value="x")
    any_value = LaunchSpec.objects.create(name="any", cluster=east, labels={"a": "b"}, tag_key="pool")
    LaunchSpec.objects.create(name="other", cluster=east, labels={"a": "b"}, tag_key="pool", tag_value="y")
    specs = list(LaunchSpec.objects.order_by("name"))
    assert specs_selecting({"pool": "x"}, specs) == [any_value, exact]
    assert specs_selecting({"pool": "z"}, specs) == [any_value]
    assert specs_selecting(None, specs) == []


def test_node_labels_rule_and_its_text() -> None:
    assert labels_match({"a": "1"}, {"a": "1", "b": "2"})
    assert not labels_match({"a": "1", "c": "3"}, {"a": "1"})
    assert labels_match({}, {"a": "1"})
    assert labels_text({"b": "2", "a": "1"}) == "a=1,b=2"
    assert labels_text({"b": "2", "a": "1"}, "\n") == "a=1\nb=2"
    assert labels_text(None) == ""


# --- what a new selector does to a pool, EIP by EIP (pool_changes) ----------------------------------------


def _address(ip: str, tags: dict[str, str], now: str = "unmanaged", region: str = "us-east-1") -> RegionAddress:
    return RegionAddress(allocation_id=f"eipalloc-{ip.rsplit('.', 1)[1]}", public_ip=ip, region=region, tags=tags,
                         now=now)


def test_pool_changes_says_which_eips_a_new_selector_takes_and_lets_go() -> None:
    old = PoolSelector("us-east-1", "pool", "web")
    new = PoolSelector("us-east-1", "pool", None)
    addresses = [
        _address("127.0.0.10", {"pool": "batch"}),                     # taken: selected now, not before
        _address("127.0.0.9", {"pool": "api"}, "unmanaged, attached to i-0bastion"),
        _address("127.0.0.5", {"pool": "web"}, "on node n1"),            # stays: both select it
        _address("127.0.0.7", {"other": "x"}),                          # neither
        _address("127.0.0.8", {"pool": "x"}, region="eu-west-1"),       # another region's
    ]
    assert pool_changes(old, new, addresses) == [
        "+ pool takes 127.0.0.9 (eipalloc-9), now unmanaged, attached to i-0bastion",
        "+ pool takes 127.0.0.10 (eipalloc-10), now unmanaged",          # in IP order, not text order
    ]
    # The way back: the narrower selector lets them go.
    assert pool_changes(new, old, addresses) == [
        "- pool lets go of 127.0.0.9 (eipalloc-9), now unmanaged, attached to i-0bastion",
        "- pool lets go of 127.0.0.10 (eipalloc-10), now unmanaged",
    ]


def test_pool_changes_of_a_new_spec_and_of_a_move_to_another_region() -> None:
    east = PoolSelector("us-east-1", "pool", "web")
    west = PoolSelector("eu-west-1", "pool", "web")
    here, there = _address("127.0.0.1", {"pool": "web"}, "free"), _address("127.0.0.2", {"pool": "web"},
                                                                          region="eu-west-1")
    assert pool_changes(None, east, [here, there]) == ["+ pool takes 127.0.0.1 (eipalloc-1), now free"]
    assert pool_changes(east, west, [here, there]) == [
        "+ pool takes 127.0.0.2 (eipalloc-2), now unmanaged",
        "- pool lets go of 127.0.0.1 (eipalloc-1), now free",
    ]
    assert pool_changes(east, east, [here, there]) == []


def test_pool_changes_are_cut_short_after_a_limit_with_the_count_of_the_rest() -> None:
    new = PoolSelector("us-east-1", "pool", None)
    addresses = [_address(f"127.0.1.{n}", {"pool": "x"}) for n in range(1, 8)]
    assert pool_changes(None, new, addresses, limit=3) == [
        "+ pool takes 127.0.1.1 (eipalloc-1), now unmanaged",
        "+ pool takes 127.0.1.2 (eipalloc-2), now unmanaged",
        "+ pool takes 127.0.1.3 (eipalloc-3), now unmanaged",
        "+ pool takes 4 more EIPs",
    ]
