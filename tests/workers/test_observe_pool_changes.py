"""The pools' audit trail (pool_joined / pool_left, from what EC2 did to the tags) and the columns a reading
writes beside it: an address's PublicIpv4Pool, an EIP's first_seen_at, a node's subnet.

The moves are worked out by workers/observe.py's pure `pool_moves`; the emulator tests read the history back
after real passes, the database ones save readings directly."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from pools import services
from pools.models import ElasticIP, Event, LaunchSpec, Node
from pools.specfile import parse_launch_spec
from tests.fixtures.world import World, kinds, reconcile
from workers import observe
from workers.ec2 import Address
from workers.observe import JOINED_ALLOCATED, LEFT_RELEASED, LEFT_UNTAGGED, pool_moves

REGION = "us-east-1"
KEY = "eipdash/pool"


def moves() -> list[tuple[str, str, str, str]]:
    """The history's pool_joined and pool_left events, oldest first: (kind, spec, public IP, reason)."""
    return [(e.kind, e.launch_spec, e.public_ip, e.reason) for e in
            Event.objects.filter(kind__in=[Event.Kind.POOL_JOINED, Event.Kind.POOL_LEFT]).order_by("id")]


# ---- pool_moves, pure


@dataclass(frozen=True)
class Selector:
    name: str
    tag_key: str = KEY
    tag_value: str | None = None


def seen(ip: str, tags: dict[str, str] | None = None) -> observe.Seen:
    return observe.Seen(ip, tags or {})


def test_pool_moves_retagged_from_one_pool_to_another_leaves_the_first_then_joins_the_second() -> None:
    web, api = Selector("web", tag_value="web"), Selector("api", tag_value="api")
    before = {"a1": seen("192.0.2.1", {KEY: "web"}), "a2": seen("192.0.2.2", {KEY: "api"})}
    after = {"a1": seen("192.0.2.1", {KEY: "api"}), "a2": seen("192.0.2.2", {KEY: "api"})}
    found = [(spec.name, move.joined, move.allocation_id, move.reason) for spec, move in
             pool_moves([api, web], before, after)]
    assert found == [("web", False, "a1", LEFT_UNTAGGED), ("api", True, "a1", "tagged eipdash/pool=api")]


def test_pool_moves_say_why_in_words() -> None:
    any_value = Selector("any")  # the key alone selects any value, the empty one too
    before = {"kept": seen("192.0.2.1", {KEY: "x"}), "untagged": seen("192.0.2.2", {KEY: "x"}),
              "released": seen("192.0.2.3", {KEY: "x"}), "tagged": seen("192.0.2.4", {"team": "search"})}
    after = {"kept": seen("192.0.2.1", {KEY: "y"}), "untagged": seen("192.0.2.2"),
             "tagged": seen("192.0.2.4", {KEY: ""}), "new": seen("192.0.2.5", {KEY: "z"})}
    found = {move.allocation_id: (move.joined, move.public_ip, move.reason) for _, move in
             pool_moves([any_value], before, after)}
    assert found == {
        "untagged": (False, "192.0.2.2", LEFT_UNTAGGED),
        "released": (False, "192.0.2.3", LEFT_RELEASED),
        "tagged": (True, "192.0.2.4", "tagged eipdash/pool"),
        "new": (True, "192.0.2.5", JOINED_ALLOCATED),
    }


# ---- readings saved to the database


def spec(name: str, tag_value: str | None) -> LaunchSpec:
    selector = {"tagKey": KEY, **({"tagValue": tag_value} if tag_value is not None else {})}
    data = parse_launch_spec({"name": name, "labels": [{"key": "eipdash.io/pool", "value": name}],
                              "elasticIpPool": {"tagSelector": selector}, "region": REGION})
    return services.launch_spec_apply(data=data)[0]


def address(n: int, pool: str | None = "web", *, ipv4_pool: str = "amazon") -> Address:
    return Address(allocation_id=f"eipalloc-{n:04d}", public_ip=f"198.51.100.{n}",
                   tags={KEY: pool} if pool is not None else {}, association_id=None, eni_id=None, private_ip=None,
                   instance_id=None, public_ipv4_pool=ipv4_pool)


def save(addresses: list[Address], at: dt.datetime | None = None, *, number: int | None = None) -> None:
    """Save a reading as a pass does: numbered as it starts (services.region_reading_number), unless given."""
    region_specs = list(LaunchSpec.objects.filter(cluster__region=REGION).select_related("cluster"))
    number = number if number is not None else services.region_reading_number(region=REGION)
    observe._save_addresses(REGION, addresses, at or timezone.now(), region_specs, number=number)


def test_the_first_reading_of_a_region_is_the_baseline_and_records_nothing(db: None) -> None:
    spec("web", "web")
    save([address(1), address(2), address(3, None)])
    assert moves() == []
    save([address(1), address(2), address(3, "web")])
    assert moves() == [("pool_joined", "web", "198.51.100.3", "tagged eipdash/pool=web")]


def test_saving_the_same_reading_again_records_each_move_once(db: None) -> None:
    spec("web", "web")
    save([address(1)])
    reading = [address(1), address(2)]
    save(reading)
    save(reading)  # another pass of the region saves the same reading
    assert moves() == [("pool_joined", "web", "198.51.100.2", JOINED_ALLOCATED)]
    (event,) = kinds("pool_joined")
    assert (event.region, event.allocation_id, event.cluster) == (REGION, "eipalloc-0002", "default")


def test_a_disabled_specs_pool_still_records_its_moves(db: None) -> None:
    spec("web", "web")
    LaunchSpec.objects.filter(name="web").update(enabled=False)  # draining: its allowlist still matters
    save([address(1), address(2, None)])
    save([address(1, None), address(2)])
    assert moves() == [("pool_left", "web", "198.51.100.1", LEFT_UNTAGGED),
                       ("pool_joined", "web", "198.51.100.2", "tagged eipdash/pool=web")]


def test_a_selector_edit_records_no_pool_move(db: None) -> None:
    spec("web", "web")
    reading = [address(1, "web"), address(2, "api")]
    save(reading)
    spec("web", "api")  # audited as spec_updated; EC2 changed nothing
    save(reading)
    assert moves() == []
    assert kinds("spec_updated")


def test_the_ipv4_pool_is_stored_and_first_seen_at_is_set_once(db: None) -> None:
    spec("web", "web")
    first = timezone.now() - dt.timedelta(minutes=10)
    save([address(1), address(2, None, ipv4_pool="ipv4pool-ec2-0123")], at=first)
    row = ElasticIP.objects.get(allocation_id="eipalloc-0001")
    assert (row.public_ipv4_pool, row.first_seen_at) == ("amazon", first)
    assert observe.UnmanagedAddress.objects.get(allocation_id="eipalloc-0002").public_ipv4_pool == "ipv4pool-ec2-0123"
    # Changed (associated), untagged (gone), tagged again: the row is rewritten each time, first_seen_at kept.
    associated = dataclasses.replace(address(1), association_id="eipassoc-1", eni_id="eni-1")
    for reading in ([associated], [address(1, None)], [address(1)]):
        save(reading)
    row.refresh_from_db()
    assert (row.gone, row.first_seen_at) == (False, first)
    save([address(1), address(3)])
    later = ElasticIP.objects.get(allocation_id="eipalloc-0003").first_seen_at
    assert later is not None and later > first


# ---- real passes against the EC2 emulator


def test_tags_allocations_and_releases_in_ec2_record_pool_joined_and_left(world: World) -> None:
    spec = world.spec()
    (pooled,) = world.eips(1)
    (decoy,) = world.eips(1, {"team": "search"})
    reconcile(spec)
    assert moves() == []  # the region's first reading: the baseline
    ip = {allocation: world.address(allocation)["PublicIp"] for allocation in (pooled, decoy)}

    world.ec2.client.create_tags(Resources=[decoy], Tags=[{"Key": KEY, "Value": "ingress"}])
    reconcile(spec)
    assert moves() == [("pool_joined", "ingress", ip[decoy], "tagged eipdash/pool=ingress")]
    (joined,) = kinds("pool_joined")
    assert (joined.allocation_id, joined.region) == (decoy, REGION)
    reconcile(spec)
    assert len(moves()) == 1  # nothing changed in EC2: nothing more

    world.ec2.client.delete_tags(Resources=[decoy], Tags=[{"Key": KEY}])
    world.ec2.client.release_address(AllocationId=pooled)
    (allocated, allocated_ip) = world.ec2.allocate_eip({KEY: "ingress"})
    reconcile(spec)
    *left, joined_too = moves()[1:]  # the leaves (in allocation id order), then the join
    assert sorted(left) == sorted([("pool_left", "ingress", ip[decoy], LEFT_UNTAGGED),
                                   ("pool_left", "ingress", ip[pooled], LEFT_RELEASED)])
    assert joined_too == ("pool_joined", "ingress", allocated_ip, JOINED_ALLOCATED)
    reconcile(spec)
    assert len(moves()) == 4
    # moto reports no PublicIpv4Pool: stored empty, as "not reported".
    assert ElasticIP.objects.get(allocation_id=allocated).public_ipv4_pool == ""


def test_a_nodes_subnet_is_stored_from_describe_instances(world: World) -> None:
    spec = world.spec()
    node = world.node("a")
    reconcile(spec)
    (instance,) = world.ec2.client.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]["Instances"]
    assert instance["SubnetId"] and Node.objects.get(name="a").subnet_id == instance["SubnetId"]


def test_a_reading_saved_after_a_newer_one_writes_nothing_and_records_no_move(db: None) -> None:
    """Two passes of the region read at once and save in the other order: the older reading must not step the
    rows back (nor record the EIP the newer one saw join as leaving, then joining again)."""
    spec("web", "web")
    save([address(1)])
    older = services.region_reading_number(region=REGION)
    newer = services.region_reading_number(region=REGION)
    save([address(1), address(2)], number=newer)
    save([address(1)], number=older)
    assert moves() == [("pool_joined", "web", "198.51.100.2", JOINED_ALLOCATED)]
    assert ElasticIP.objects.get(allocation_id="eipalloc-0002").gone is False
    save([address(1), address(2)])  # the next reading: nothing moved
    assert len(moves()) == 1


def test_the_first_eips_of_a_region_whose_first_reading_was_empty_are_recorded(db: None) -> None:
    spec("web", "web")
    save([])  # the baseline: a region without addresses yet
    save([address(1)])
    assert moves() == [("pool_joined", "web", "198.51.100.1", JOINED_ALLOCATED)]


def save_digested(addresses: list[Address]) -> None:
    """Save a reading as a pass does, with its digest (observe.addresses_digest)."""
    region_specs = list(LaunchSpec.objects.filter(cluster__region=REGION).select_related("cluster"))
    observe._save_addresses(REGION, addresses, timezone.now(), region_specs,
                            number=services.region_reading_number(region=REGION),
                            digest=observe.addresses_digest(addresses, "selection"))


def test_save_addresses_of_a_reading_equal_to_the_last_one_moves_last_seen_only(db: None) -> None:
    spec("web", "web")
    services.region_seq_bump(region=REGION)  # as every change to AWS does first
    reading = [address(1), address(2)]
    save_digested(reading)
    # Not a writer of eipdash's (no region_addresses_written): only a save that compares the rows would see it.
    ElasticIP.objects.filter(allocation_id="eipalloc-0001").update(public_ip="203.0.113.99")
    before = ElasticIP.objects.get(allocation_id="eipalloc-0002").last_seen_at
    save_digested(reading)
    assert ElasticIP.objects.get(allocation_id="eipalloc-0001").public_ip == "203.0.113.99"
    assert ElasticIP.objects.get(allocation_id="eipalloc-0002").last_seen_at > before
    # Any change in the reading is written in full, as always.
    save_digested([address(1), address(2, None)])
    assert ElasticIP.objects.get(allocation_id="eipalloc-0001").public_ip == "198.51.100.1"
    assert ElasticIP.objects.get(allocation_id="eipalloc-0002").gone


def test_save_addresses_writes_the_rows_again_after_eipdash_wrote_one_even_from_an_equal_reading(db: None) -> None:
    """eipdash associated an EIP and wrote its row; then someone took the association off outside eipdash: the
    next reading equals the one the rows were written from, and the row must follow AWS back."""
    spec("web", "web")
    services.region_seq_bump(region=REGION)
    reading = [address(1)]
    save_digested(reading)
    with transaction.atomic():  # what the assign step's record does (workers/steps/assign.py)
        ElasticIP.objects.filter(allocation_id="eipalloc-0001").update(association_id="eipassoc-1", eni_id="eni-1",
                                                                       private_ip="10.0.0.1")
        services.region_addresses_written(region=REGION)
    save_digested(reading)
    row = ElasticIP.objects.get(allocation_id="eipalloc-0001")
    assert (row.association_id, row.eni_id, row.private_ip) == ("", "", "")
