"""`manage.py check_invariants` on hand-built worlds: each kind of violation is found, a clean world passes.

The worlds are built in the EC2 and Kubernetes emulators (and the record, where a finding is about it);
the checker reads them back through the adapters, as in production.
"""

from __future__ import annotations

import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from pools import services
from pools.models import LaunchSpec
from sandbox.kube_emulator import node_manifest
from tests.fixtures.world import LABELS, World
from workers.invariants import Checker, Observation, Violation, observe
from workers.kube import Kube, KubeNode


def check(*args: str) -> tuple[int, list[str]]:
    out = StringIO()
    try:
        call_command("check_invariants", "--grace", "0", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue().splitlines()
    return 0, out.getvalue().splitlines()


def lines_of(invariant: str, lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(invariant + " ")]


def associate(world: World, allocation_id: str, node: str) -> str:
    n = world.nodes[node]
    response = world.ec2.client.associate_address(AllocationId=allocation_id, NetworkInterfaceId=n.eni_id,
                                                  PrivateIpAddress=n.private_ip, AllowReassociation=False)
    return str(response["AssociationId"])


def released_event(spec: LaunchSpec, world: World, node: str, allocation_id: str) -> None:
    services.event_record(kind="released", reason="drained", context=services.EventContext(
        launch_spec=spec.name, cluster=spec.cluster.name, region="us-east-1", node=node,
        instance_id=world.nodes[node].instance_id, allocation_id=allocation_id))


def test_a_clean_world_passes(world: World) -> None:
    world.spec()
    world.eips(2)
    for name in ("a", "b", "c"):  # three nodes, two EIPs: one waits, tainted, and that is no violation
        world.node(name)
    world.pod("web", "a")
    call_command("reconcile", stdout=StringIO())
    world.cordon("a")  # draining with a workload pod: keeps its EIP
    call_command("reconcile", stdout=StringIO())
    assert world.eip_on("a") is not None

    code, lines = check()

    assert (code, lines[-1:]) == (0, ["no violations (3 nodes, 2 pool EIPs)"]), lines


def test_i1_a_schedulable_node_without_a_pool_eip(world: World) -> None:
    world.spec()
    world.eips(1)
    world.node("bare", tainted=False)
    world.node("waits")  # the startup taint keeps pods away
    world.node("cordoned", tainted=False)
    world.cordon("cordoned")
    world.node("other-taint", tainted=False)
    world.kube.patch("nodes", "other-taint", {"spec": {"taints": [
        {"key": "example.com/maintenance", "value": "x", "effect": "NoExecute"}]}})
    world.node("not-ours", tainted=False, labels={"team": "other"})

    code, lines = check()

    assert code == 1
    assert lines_of("I1", lines) == [
        f"I1 node bare ({world.nodes['bare'].instance_id}) is schedulable without a pool EIP: no EIP on its "
        "primary IP"
    ]


def test_i1_a_foreign_eip_does_not_count(world: World) -> None:
    world.spec()
    (foreign,) = world.eips(1, tags={"Name": "someone-elses"})
    world.node("a", tainted=False)
    associate(world, foreign, "a")

    code, lines = check()

    assert code == 1 and lines_of("I1", lines) == [
        f"I1 node a ({world.nodes['a'].instance_id}) is schedulable without a pool EIP: a non-pool EIP sits on "
        "its primary IP"
    ]


def test_i1_not_reported_when_the_node_changed_while_aws_was_read(world: World) -> None:
    """Kubernetes, then AWS, then Kubernetes again: the engine lifted the taint right after AWS was read
    (the EIP came between the reads); a checker believing the last reading would see a schedulable node
    without an EIP, which never was."""
    world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")

    class MovingWorld(Kube):
        calls = 0

        def list_all_nodes(self, *, page_size: int = 500) -> list[KubeNode]:
            MovingWorld.calls += 1
            if MovingWorld.calls == 2:  # AWS has been read: now the engine associates and lifts the taint
                associate(world, allocation_id, "a")
                world.kube.patch("nodes", "a", {"spec": {"taints": None}})
            return super().list_all_nodes(page_size=page_size)

    observation = observe(kube_for=lambda cluster: MovingWorld())

    assert MovingWorld.calls == 2
    assert [v for v in observation.violations if v.invariant == "I1"] == []


def test_i2_a_busy_node_that_lost_its_eip(world: World) -> None:
    spec = world.spec()
    allocation_id, idle_allocation = world.eips(2)
    for name in ("busy", "idle"):
        world.node(name, tainted=False)
        world.cordon(name)
    world.pod("web", "busy")
    world.pod("agent", "idle", daemonset=True)
    world.pod("done", "idle", phase="Succeeded")
    released_event(spec, world, "busy", allocation_id)
    released_event(spec, world, "idle", idle_allocation)

    code, lines = check()

    assert code == 1
    (line,) = lines_of("I2", lines)
    assert line.startswith(f"I2 node busy ({world.nodes['busy'].instance_id}) runs 1 workload pod(s) but "
                           f"{allocation_id} was released from it")


def test_i2_a_release_from_an_earlier_instance_of_the_name_does_not_count(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("reused", tainted=False)
    world.cordon("reused")
    world.pod("web", "reused")
    services.event_record(kind="released", reason="instance terminated", context=services.EventContext(
        launch_spec=spec.name, cluster=spec.cluster.name, node="reused", instance_id="i-0123456789abcdef0",
        allocation_id=allocation_id))

    code, lines = check()

    assert lines_of("I2", lines) == [], lines


def test_i3_two_pool_eips_on_one_node(world: World) -> None:
    world.spec()
    first, second = world.eips(2)
    world.node("a", tainted=False)
    associate(world, first, "a")
    associate(world, second, "a")  # AWS would knock the first off; the emulator keeps both

    code, lines = check()

    assert code == 1
    (line,) = lines_of("I3", lines)
    ips = sorted(world.address(a)["PublicIp"] for a in (first, second))
    assert line == f"I3 node a holds 2 pool EIPs: {ips[0]}, {ips[1]}"


def test_i4_record_behind_aws(world: World) -> None:
    world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    call_command("reconcile", stdout=StringIO())
    association = world.address(allocation_id)["AssociationId"]
    world.cordon("a")
    world.ec2.client.disassociate_address(AssociationId=association)  # behind eipdash's back
    ip = world.address(allocation_id)["PublicIp"]

    code, lines = check()

    assert code == 1
    n = world.nodes["a"]
    assert lines_of("I4", lines) == [
        f"I4 node a is labelled eipdash.io/eip={ip}, but AWS shows no pool EIP on its primary IP",
        f"I4 open record of {ip} on a ({n.eni_id} {n.private_ip}), but AWS shows it free",
    ]


def test_i4_an_eip_on_a_node_without_record_and_on_a_gone_node(world: World) -> None:
    world.spec()
    unrecorded, on_gone = world.eips(2)
    world.node("a", tainted=False)
    associate(world, unrecorded, "a")
    world.node("b")
    call_command("reconcile", "--dry-run", stdout=StringIO())  # the record learns b's ENI, nothing else
    associate(world, on_gone, "b")
    world.ec2.terminate(world.nodes["b"].instance_id, drop_associations=False)  # moto keeps it, AWS would not
    world.kube.delete("nodes", "b")

    code, lines = check()

    assert code == 1
    ips = {a: world.address(a)["PublicIp"] for a in (unrecorded, on_gone)}
    assert sorted(lines_of("I4", lines)) == sorted([
        f"I4 AWS shows {ips[unrecorded]} on node a without an open record",
        f"I4 {ips[on_gone]} is still on gone node b (instance {world.nodes['b'].instance_id} terminated)",
    ])


def test_a_disabled_spec_has_no_i1_but_keeps_i4(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a", tainted=False)
    associate(world, allocation_id, "a")
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    world.node("b", tainted=False)

    code, lines = check()

    assert lines_of("I1", lines) == [] and len(lines_of("I4", lines)) == 1


def test_unreadable_world_is_exit_2(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.spec()
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")  # nothing listens there

    with pytest.raises(CommandError, match="could not read the world") as raised:
        call_command("check_invariants", "--grace", "0", stdout=StringIO())
    assert raised.value.returncode == 2


# --- the grace rule of I4, on plain observations ----------------------------------------------------------


def observations(*batches: list[Violation]) -> Any:
    queue = [Observation(violations=list(batch)) for batch in batches]
    return lambda: queue.pop(0)


def test_grace_i4_counts_only_when_it_persists_and_i1_at_once() -> None:
    now = [0.0]
    i1 = Violation("I1", "I1:x", "node x is schedulable without a pool EIP")
    i4 = Violation("I4", "I4:y", "open record of y on z, but AWS shows it free")
    checker = Checker(grace_seconds=5, clock=lambda: now[0],
                      observe_fn=observations([i1, i4], [i4], [i4], [], [i4], [i4]))

    assert checker.sample() == [i1]  # I4 first seen
    now[0] = 3
    assert checker.sample() == []  # seen twice, but for 3 s only
    now[0] = 6
    assert checker.sample() == [i4]  # persisted past the grace period
    now[0] = 7
    assert checker.sample() == []  # repaired
    now[0] = 20
    assert checker.sample() == []  # back: its clock starts again
    now[0] = 26
    assert checker.sample() == [i4]



def test_grace_i4_waits_for_two_passes_of_every_spec_unless_the_passes_stall() -> None:
    """"Within one pass": with every worker frozen or restarting, no pass runs, and a finding that lasts past
    the grace in seconds is the slow machine's, not the engine's. Once two passes ended since it was first
    seen, it counts; if no pass ends at all, it counts after the stall period (stopped passes are a fault)."""
    now = [0.0]
    i4 = Violation("I4", "I4:y", "open record of y on z, but AWS no longer lists that EIP in any pool")

    def seen(marks: dict[int, object]) -> Observation:
        return Observation(violations=[i4], passes=marks)

    queue = [seen({1: "a", 2: "p"}), seen({1: "a", 2: "p"}), seen({1: "b", 2: "p"}), seen({1: "c", 2: "q"}),
             seen({1: "d", 2: "r"})]
    checker = Checker(grace_seconds=30, clock=lambda: now[0], observe_fn=lambda: queue.pop(0))
    assert checker.sample() == []  # first seen
    now[0] = 35
    assert checker.sample() == []  # past the grace, but no pass ended since
    now[0] = 36
    assert checker.sample() == []  # spec 1 ended one pass, spec 2 none
    now[0] = 37
    assert checker.sample() == []  # spec 1: two, spec 2: one
    now[0] = 38
    assert checker.sample() == [i4]  # both specs ended two passes since: the passes did not set it right

    stalled = [seen({1: "a"}) for _ in range(3)]
    checker = Checker(grace_seconds=30, clock=lambda: now[0], observe_fn=lambda: stalled.pop(0))
    now[0] = 0
    assert checker.sample() == []
    now[0] = 59
    assert checker.sample() == []
    now[0] = 60
    assert checker.sample() == [i4]  # no pass for twice the grace: counts anyway


def test_observe_marks_a_spec_by_its_last_successful_pass_only(world: World) -> None:
    """A pass that failed on a fault (a read refused, a step that got a 500) moves last_reconciled_at but could
    set nothing right: it must not count toward I4's grace. The CI run that found this: a claim left open
    while AWS showed its EIP free outlived 30 s and "two passes", both of which had failed (a Kubernetes 500
    on the re-taint before the close, then a read error)."""
    spec = world.spec()
    LaunchSpec.objects.filter(pk=spec.pk).update(last_reconciled_at=timezone.now(), last_successful_pass_at=None)
    assert observe().passes == {spec.pk: None}

    succeeded = timezone.now()
    LaunchSpec.objects.filter(pk=spec.pk).update(last_reconciled_at=timezone.now(), last_successful_pass_at=succeeded)
    assert observe().passes == {spec.pk: succeeded}


def test_settle_counts_what_two_successful_passes_left_however_short() -> None:
    """After the quiet time the world has been left alone: a finding still there after two successful passes
    of every spec counts, though it lasted less than the grace; one that no such pass has met yet does not."""
    now = [0.0]
    old = Violation("I4", "I4:old", "open record of y on z, but AWS shows it free")
    new = Violation("I4", "I4:new", "open record of w on v, but AWS shows it free")
    queue = [Observation(violations=[old], passes={1: "a"}), Observation(violations=[old], passes={1: "b"}),
             Observation(violations=[old, new], passes={1: "c"})]
    checker = Checker(grace_seconds=30, clock=lambda: now[0], observe_fn=lambda: queue.pop(0))
    assert checker.sample() == []
    now[0] = 5
    assert checker.sample() == []  # one pass since, 5 s: within the grace
    now[0] = 10
    assert checker.settle() == [old]  # two passes since: they did not set it right


def test_an_association_made_onto_an_instance_already_seen_dead_counts_at_once() -> None:
    """No pass may associate onto an instance dead for long (it looks at its targets right before): unlike an
    EIP left on a node that just died, which the next pass takes back, this needs no grace."""
    now = [0.0]
    seen = [
        Observation(dead_enis={"eni-dead"}, associations={"eipalloc-1": ("eipassoc-1", "eni-dead")}),  # left on it
        Observation(dead_enis={"eni-dead"}),  # taken back
        Observation(dead_enis={"eni-dead", "eni-just"}, associations={"eipalloc-1": ("eipassoc-2", "eni-dead"),
                                                                       "eipalloc-2": ("eipassoc-3", "eni-just")}),
    ]
    checker = Checker(grace_seconds=30, clock=lambda: now[0], observe_fn=lambda: seen.pop(0))
    assert checker.sample() == []  # the EIP was there before anyone knew the instance was dead
    now[0] = 3.0
    assert checker.sample() == []
    now[0] = 9.0
    (found,) = checker.sample()  # eni-just died in this very sample: its association may predate that
    assert found.invariant == "I4" and found.immediate and "eipalloc-1" in found.key
    assert "at least 3.0s" in found.message  # made after the last sample, 3 s after the death: not 9 s


def test_an_association_onto_the_dead_is_timed_from_the_last_sample_not_this_one() -> None:
    """A slow sampler: the association showed up 10 s after the death, but may have been made any time after
    the sample before, 0.5 s after the death, by a pass that looked while the instance still ran."""
    now = [0.0]
    seen = [Observation(), Observation(dead_enis={"eni-dead"}),
            Observation(dead_enis={"eni-dead"}, associations={"eipalloc-1": ("eipassoc-1", "eni-dead")})]
    checker = Checker(grace_seconds=30, clock=lambda: now[0], observe_fn=lambda: seen.pop(0))
    assert checker.sample() == []
    now[0] = 1.0
    assert checker.sample() == []  # the instance is first seen dead
    now[0] = 11.0
    assert [v for v in checker.sample() if v.immediate] == []


def test_i2_leaves_a_schedulable_node_to_i1(world: World) -> None:
    """Pods on a schedulable node without its EIP may have come after the release: that is I1's finding."""
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a", tainted=False)
    world.pod("web", "a")
    released_event(spec, world, "a", allocation_id)

    code, lines = check()

    assert lines_of("I2", lines) == [] and len(lines_of("I1", lines)) == 1


def test_i4_a_record_left_on_the_old_instance_of_a_reused_name(world: World) -> None:
    """EKS reuses ip-… node names: the name comes back on a new instance while AWS (as the emulator does
    after terminate) still shows the EIP on the old instance's ENI and the record still holds it."""
    world.spec()
    (allocation_id,) = world.eips(1)
    old = world.node("ip-10-0-0-9")
    call_command("reconcile", stdout=StringIO())
    world.ec2.terminate(old.instance_id, drop_associations=False)
    world.kube.delete("nodes", old.name)
    new = world.node(old.name)  # registered again, tainted, on a new instance
    call_command("reconcile", "--dry-run", stdout=StringIO())  # the record now knows the new instance
    ip = world.address(allocation_id)["PublicIp"]

    code, lines = check()

    assert code == 1
    found = lines_of("I4", lines)
    assert (f"I4 open record of {ip} on {old.name} is for ENI {old.eni_id}, but {old.name} is now instance "
            f"{new.instance_id} (ENI {new.eni_id})") in found, lines
    assert any(line.startswith(f"I4 {ip} is still on ENI {old.eni_id}") for line in found), lines


def test_a_node_whose_instance_ec2_does_not_list(world: World) -> None:
    """Right after a launch, or for a node of another account: no instance to judge, no violation, no crash."""
    world.spec()
    world.eips(1)
    world.kube.create("nodes", node_manifest("ghost", "i-0000000000000dead", "us-east-1a", LABELS))

    assert check() == (0, ["no violations (1 nodes, 1 pool EIPs)"])


def test_i2_over_time_between_two_samples_against_the_life_of_pods() -> None:
    """The campaign's I2 check, on its own clock only: an EIP that left an instance between two samples while
    a workload pod of that very instance lived through both. (Never the history's timestamps: a worker's clock
    may run ahead.)"""
    from sandbox.chaos import Findings, LedgerKube, PodLife, i2_between_samples

    t = time.time()
    on = {"eipalloc-busy": ("eipassoc-1", "eni-1"), "eipalloc-idle": ("eipassoc-2", "eni-2"),
          "eipalloc-killed": ("eipassoc-3", "eni-3"), "eipalloc-stays": ("eipassoc-4", "eni-4")}
    enis = {"eni-1": "i-1", "eni-2": "i-2", "eni-3": "i-3", "eni-4": "i-4"}
    ledger = LedgerKube("http://127.0.0.1:9", {})
    ledger.pods = {
        "web-1": PodLife("busy", "i-1", created=t - 10, deleted=t + 5),  # ran through both samples
        "web-2": PodLife("busy", "i-1", created=t + 0.2),  # came after the first sample
        "web-3": PodLife("idle", "i-2", created=t - 10, deleted=t + 0.3),  # gone before the second
        "web-4": PodLife("killed", "i-3", created=t - 10),  # its instance was terminated meanwhile
        "web-5": PodLife("stays", "i-4", created=t - 10),  # its EIP stayed
    }
    findings = Findings()
    first = Observation(associations=on, instance_of_eni=enis)
    assert i2_between_samples(findings, first, ledger, {}, t, t + 0.1) == []
    second = Observation(associations={"eipalloc-stays": on["eipalloc-stays"]}, instance_of_eni=enis)
    found = i2_between_samples(findings, second, ledger, {"i-3": t + 0.4}, t + 0.5, t + 0.6)
    assert [line for _, line in found] == ["I2 eipalloc-busy left i-1 while workload pod(s) ran there: web-1"]


def test_engine_a_node_replaced_during_a_pass_keeps_its_startup_taint(world: World) -> None:
    """Found by the fault campaign (docs/reliability.md): the startup taint was lifted by node name, so a
    name re-registered on a new instance between the pass's reading and its taint lift lost the taint of
    the new node, which has no EIP. The writes now check the instance behind the name."""
    from workers.ec2 import Ec2
    from workers.executor import run_pass

    spec = world.spec()
    world.eips(1)
    old = world.node("ip-10-0-0-9")
    replaced: list[str] = []

    class Replacing(Kube):
        """The replacement lands after the pass read the world, right before it lifts the taint."""

        def lift_startup_taint(self, node_name: str, *args: Any, **kwargs: Any) -> Any:
            if not replaced:
                world.ec2.terminate(old.instance_id, drop_associations=False)
                world.kube.delete("nodes", old.name)
                replaced.append(world.node(old.name).instance_id)  # same name, new instance, tainted
            return super().lift_startup_taint(node_name, *args, **kwargs)

        def mark_ready(self, node_name: str, **kwargs: Any) -> bool:  # marks and the taint lift in one patch
            if not replaced:
                world.ec2.terminate(old.instance_id, drop_associations=False)
                world.kube.delete("nodes", old.name)
                replaced.append(world.node(old.name).instance_id)
            return super().mark_ready(node_name, **kwargs)

    run_pass(spec, ec2=Ec2("us-east-1"), kube=Replacing())

    assert replaced
    assert lines_of("I1", check()[1]) == []
