"""The quiet pass (workers/observe.py `quiet_fingerprint`, `_still_quiet`; workers/executor.py): a pass whose
reading, node list and spec are what the last pass with nothing to do saw writes no snapshot and plans nothing.

Every kind of change in the world is still seen by the very next pass: a tag, an association made outside
eipdash, a node label, a taint, a new node, a spot interruption that leaves its node listed and Ready. Each test
first checks that the pass before the change was quiet (else it would prove nothing), then reads the change's
effect back from AWS (the EC2 emulator), Kubernetes (the API emulator) or the database."""

from __future__ import annotations

import datetime as dt

from django.db.models.signals import post_init
from django.utils import timezone

from pools.models import ElasticIP, LaunchSpec, Node, SpecFence
from tests.fixtures.world import TAINT, World, reconcile
from workers.executor import PassReport


def quiet_world(world: World, *, eips: int = 3, nodes: tuple[str, ...] = ("a", "b")) -> LaunchSpec:
    """Every node holds its EIP, and the last pass was a quiet one."""
    spec = world.spec()
    world.eips(eips)
    for name in nodes:
        world.node(name)
    reports = [reconcile(spec) for _ in range(3)]
    assert [r.quiet for r in reports] == [False, False, True], [r.lines() for r in reports]
    assert all(world.eip_on(name) for name in nodes)
    return spec


def quiet_once_more(spec: LaunchSpec) -> PassReport:
    report = reconcile(spec)
    assert report.quiet, report.lines()
    return report


def test_a_quiet_pass_writes_no_snapshot_yet_counts_as_a_successful_pass(world: World) -> None:
    spec = quiet_world(world)
    # A row a snapshot write would put right: the quiet pass does not read or write the rows.
    Node.objects.filter(name="a").update(az="not-written")
    before = LaunchSpec.objects.get(pk=spec.pk).last_successful_pass_at
    seq_before = SpecFence.objects.get(spec_id=spec.pk).fresh_from_seq
    report = quiet_once_more(spec)
    assert report.lines() == ["ingress: nothing changed since the last pass: nothing to do"]
    assert Node.objects.get(name="a").az == "not-written"
    assert LaunchSpec.objects.get(pk=spec.pk).last_successful_pass_at > before
    # Its readings start after it, as after every pass (workers/readings.py).
    assert SpecFence.objects.get(spec_id=spec.pk).fresh_from_seq > seq_before


def test_a_quiet_pass_builds_no_node_row(world: World) -> None:
    """Its cost at 5,000 nodes is the node list and the reading, not the rows (steady_cpu_s_5000): a quiet pass
    builds no Node instance (the reads before its quiet check take names and instance ids as plain values)."""
    spec = quiet_world(world)
    built: list[Node] = []

    def count(sender: type[Node], instance: Node, **kwargs: object) -> None:
        built.append(instance)

    post_init.connect(count, sender=Node)
    try:
        quiet_once_more(spec)
    finally:
        post_init.disconnect(count, sender=Node)
    assert built == []


def test_a_tag_taken_off_a_free_eip_is_seen_by_the_next_pass(world: World) -> None:
    spec = quiet_world(world)
    quiet_once_more(spec)
    (free,) = ElasticIP.objects.filter(association_id="", gone=False).values_list("allocation_id", flat=True)
    world.ec2.client.delete_tags(Resources=[free], Tags=[{"Key": "eipdash/pool"}])
    assert not reconcile(spec).quiet
    assert ElasticIP.objects.get(allocation_id=free).gone


def test_an_association_undone_outside_eipdash_is_seen_by_the_next_pass(world: World) -> None:
    spec = quiet_world(world, eips=2)
    quiet_once_more(spec)
    held = world.eip_on("a")
    world.ec2.client.disassociate_address(AssociationId=world.address(held)["AssociationId"])
    report = reconcile(spec)
    assert not report.quiet
    # The node is served again (or at least kept from pods until it is): never schedulable without an EIP.
    assert world.eip_on("a") is not None or TAINT in world.taints("a"), report.lines()


def test_a_node_label_changed_is_seen_by_the_next_pass(world: World) -> None:
    spec = quiet_world(world)
    quiet_once_more(spec)
    world.kube.patch("nodes", "b", {"metadata": {"labels": {"team": "edge"}}})
    assert not reconcile(spec).quiet
    assert Node.objects.get(name="b").labels.get("team") == "edge"


def test_a_taint_that_drains_the_node_is_seen_by_the_next_pass(world: World) -> None:
    spec = quiet_world(world)
    quiet_once_more(spec)
    world.kube.patch("nodes", "b", {"spec": {"taints": [
        {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}})
    reports = [reconcile(spec) for _ in range(2)]
    assert not any(r.quiet for r in reports)
    assert world.eip_on("b") is None  # no workload pods: its EIP goes back to the pool


def test_a_new_node_is_served_by_the_next_pass(world: World) -> None:
    spec = quiet_world(world)
    quiet_once_more(spec)
    world.node("c")
    assert not reconcile(spec).quiet
    assert world.eip_on("c") is not None and TAINT not in world.taints("c")


def test_a_spot_interruption_that_leaves_the_node_listed_and_ready_is_seen_at_its_recheck(world: World) -> None:
    spec = quiet_world(world)
    quiet_once_more(spec)
    world.ec2.terminate(world.nodes["b"].instance_id, drop_associations=False)
    # Within EIPDASH_INSTANCE_RECHECK_SECONDS the pass may stay quiet; once the facts are due, it looks again.
    Node.objects.filter(name="b").update(instance_checked_at=timezone.now() - dt.timedelta(hours=1))
    assert not reconcile(spec).quiet
    assert Node.objects.get(name="b").instance_state == "terminated"


def test_a_spec_edited_is_planned_again(world: World) -> None:
    spec = quiet_world(world)
    quiet_once_more(spec)
    LaunchSpec.objects.filter(pk=spec.pk).update(min_free=5)
    assert not reconcile(spec).quiet


def test_a_pass_with_something_to_do_clears_the_fingerprint(world: World) -> None:
    """Kept only while passes have nothing to do: once one has, no later pass can match an older quiet one."""
    spec = quiet_world(world)
    assert SpecFence.objects.get(spec_id=spec.pk).quiet_fingerprint
    world.node("c")  # the pool's last free EIP goes to it
    assert not reconcile(spec).quiet
    assert SpecFence.objects.get(spec_id=spec.pk).quiet_fingerprint == ""
