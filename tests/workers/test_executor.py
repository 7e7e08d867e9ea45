"""The executor against the EC2 and Kubernetes emulators: state of the world, not calls, is asserted."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools import locks, planner, redis_keys, selectors, services, snapshot
from pools.models import Assignment, ElasticIP, Event, LaunchSpec, Node, RegionFacts, SpecFence, SpecPlan
from pools.planner import Plan
from tests.fixtures.world import TAINT, World, kinds, reconcile
from workers import executor
from workers.ec2 import Ec2, Permanent, Throttled
from workers.kube import Kube


def test_new_nodes_get_eips_on_their_primary_eni_then_lose_the_taint(world: World) -> None:
    spec = world.spec()
    eips = world.eips(2)
    a = world.node("a", extra_enis=2)  # EKS VPC CNI: several ENIs; the primary one gets the EIP
    b = world.node("b")
    report = reconcile(spec)
    assert not report.errors
    on = world.all_associations()
    assert sorted(on) == sorted(eips)
    assert sorted(on.values()) == sorted([a.eni_id, b.eni_id])
    for node in ("a", "b"):
        allocation_id = world.eip_on(node)
        assert TAINT not in world.taints(node)
        assert world.labels(node)["eipdash.io/eip"] == world.address(allocation_id)["PublicIp"]
        assert world.kube.get("nodes", node)["metadata"]["annotations"]["eipdash.io/allocation-id"] == allocation_id
    assert Assignment.objects.filter(closed_at__isnull=True, confirmed_at__isnull=False).count() == 2
    assert len(kinds("assigned")) == 2 and len(kinds("taint_lifted")) == 2
    assert set(Node.objects.values_list("state", flat=True)) == {"ready"}
    # A second pass changes nothing.
    assert reconcile(spec).done == []


def test_untainted_node_still_gets_its_eip(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("plain", tainted=False)
    reconcile(spec)
    assert world.eip_on("plain") is not None
    # I1: it was tainted while it had no EIP, and the taint went once the EIP was confirmed.
    assert TAINT not in world.taints("plain") and len(kinds("taint_lifted")) == 1


def test_decoys_are_never_touched(world: World) -> None:
    spec = world.spec()
    untagged = world.eips(1, tags={})
    other_value = world.eips(1, tags={"eipdash/pool": "egress"})
    world.node("a")
    reconcile(spec)
    assert world.all_associations() == {}
    assert TAINT in world.taints("a")
    assert kinds("pool_exhausted")
    assert untagged and other_value


def test_exhaustion_is_one_event_per_episode(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    world.node("b")
    reconcile(spec)
    reconcile(spec)
    reconcile(spec)
    waiting = [n for n in ("a", "b") if world.eip_on(n) is None]
    assert len(waiting) == 1 and TAINT in world.taints(waiting[0])
    assert len(kinds("pool_exhausted")) == 1
    # More EIPs end the episode; a new shortage is a new event.
    world.eips(1)
    reconcile(spec)
    assert world.eip_on(waiting[0]) is not None
    world.node("c")
    reconcile(spec)
    assert len(kinds("pool_exhausted")) == 2


def test_pool_low_is_one_event_per_episode_and_an_ongoing_problem(world: World) -> None:
    spec = world.spec()
    LaunchSpec.objects.filter(pk=spec.pk).update(min_free=2)
    spec.refresh_from_db()
    world.eips(3)
    world.node("a")
    reconcile(spec)
    reconcile(spec)
    assert world.eip_on("a") is not None and not kinds("pool_low")  # 2 free: the headroom holds
    world.node("b")
    reconcile(spec)
    reconcile(spec)
    assert world.eip_on("b") is not None  # the headroom never holds an EIP back
    (low,) = kinds("pool_low")
    assert low.launch_spec == spec.name and "1 free of 3 in the pool, below its headroom minFree 2" in low.reason
    stats = selectors.pool_stats_get(spec=LaunchSpec.objects.get(pk=spec.pk))
    assert [p.code for p in selectors.spec_problem_list(stats=[stats])] == ["pool_low"]
    # Two more EIPs end the episode; a node more starts a new one.
    world.eips(2)
    reconcile(spec)
    assert "pool_low" not in LaunchSpec.objects.get(pk=spec.pk).active_alerts
    world.node("c")
    world.node("d")
    reconcile(spec)
    assert len(kinds("pool_low")) == 2


def test_drain_keeps_the_eip_while_workload_pods_run_then_releases_it(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    world.pod("agent", "a", daemonset=True)
    world.pod("web", "a")
    world.pod("done", "a", phase="Succeeded")
    world.cordon("a")
    reconcile(spec)
    assert world.eip_on("a") == allocation_id
    assert Node.objects.get(name="a").workload_pods == 1
    assert Node.objects.get(name="a").drain_reason == "cordoned"
    world.kube.delete("pods", "web", "default")
    reconcile(spec)
    assert world.eip_on("a") is None
    assert "eipdash.io/eip" not in world.labels("a")
    assert kinds("released")[0].reason == "drained (cordoned): no workload pods left"
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()


@pytest.mark.parametrize("aws_drops_association", [True, False])
def test_terminated_and_deleted_node_releases_its_eip(world: World, aws_drops_association: bool) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    node = world.node("a")
    reconcile(spec)
    world.ec2.terminate(node.instance_id, drop_associations=aws_drops_association)
    world.kube.delete("nodes", "a")
    reconcile(spec)
    assert world.address(allocation_id).get("AssociationId") is None
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()
    assert [e.node for e in kinds("released")] == ["a"]
    # The replacement node gets that very IP.
    world.node("b")
    reconcile(spec)
    assert world.eip_on("b") == allocation_id


def test_node_with_a_foreign_eip_is_left_alone(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    node = world.node("a")
    foreign, _ = world.ec2.allocate_eip({"team": "legacy"})
    world.ec2.client.associate_address(AllocationId=foreign, NetworkInterfaceId=node.eni_id,
                                       PrivateIpAddress=node.private_ip)
    reconcile(spec)
    assert world.eip_on("a") == foreign
    assert TAINT in world.taints("a")
    assert [e.node for e in kinds("conflict")] == ["a"]
    reconcile(spec)
    assert len(kinds("conflict")) == 1


def test_pool_eip_on_a_stranger_instance_is_a_conflict(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    stranger, eni, ip = world.ec2.launch_instance()
    world.ec2.client.associate_address(AllocationId=allocation_id, NetworkInterfaceId=eni, PrivateIpAddress=ip)
    reconcile(spec)
    assert world.all_associations() == {allocation_id: eni}
    assert [e.allocation_id for e in kinds("conflict")] == [allocation_id]


def test_eip_selected_by_two_specs_is_assigned_by_neither(world: World) -> None:
    spec = world.spec()
    other = world.spec("any-pool", labels={"pool": "other"}, tag_value=None)
    world.eips(1)
    world.node("a")
    reconcile(spec)
    reconcile(other)
    assert world.all_associations() == {}
    assert {e.launch_spec for e in kinds("conflict")} == {"ingress", "any-pool"}


def test_association_without_record_is_adopted(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    node = world.node("a")
    Ec2("us-east-1").associate(allocation_id=allocation_id, eni_id=node.eni_id, private_ip=node.private_ip)
    reconcile(spec)
    assert Assignment.objects.get(closed_at__isnull=True).node.name == "a"
    assert len(kinds("adopted")) == 1 and TAINT not in world.taints("a")


class CrashAfterAssociate(Ec2):
    """The worker dies right after AWS accepted the association: nothing after it runs."""

    def associate(self, **kwargs: Any) -> str:
        super().associate(**kwargs)
        raise SystemExit("worker killed")


def test_crash_after_the_aws_call_is_repaired_on_the_next_pass(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    with pytest.raises(SystemExit):
        reconcile(spec, ec2=CrashAfterAssociate("us-east-1"))
    claim = Assignment.objects.get(closed_at__isnull=True)
    assert claim.confirmed_at is None and TAINT in world.taints("a")
    reconcile(spec)
    claim.refresh_from_db()
    assert claim.confirmed_at is not None and claim.closed_at is None
    assert world.eip_on("a") == allocation_id and TAINT not in world.taints("a")
    assert len(kinds("adopted")) == 1


class Throttling(Ec2):
    def __init__(self, region: str, fail_for: set[str]) -> None:
        super().__init__(region)
        self.fail_for = fail_for

    def associate(self, **kwargs: Any) -> str:
        if kwargs["allocation_id"] in self.fail_for:
            raise Throttled("Request limit exceeded.", code="RequestLimitExceeded", operation="AssociateAddress")
        return super().associate(**kwargs)


def test_throttled_step_is_recorded_and_the_others_go_on(world: World) -> None:
    spec = world.spec()
    first, second = sorted(world.eips(2), key=lambda a: tuple(
        int(p) for p in world.address(a)["PublicIp"].split(".")))
    world.node("a")
    world.node("b")
    report = reconcile(spec, ec2=Throttling("us-east-1", {first}))
    assert len(report.errors) == 1 and "Throttled" in report.errors[0]
    assert list(world.all_associations()) == [second]
    assert Assignment.objects.filter(closed_at__isnull=True).count() == 1
    closed = Assignment.objects.get(closed_at__isnull=False)
    assert closed.close_reason == "AWS call failed: RequestLimitExceeded" and closed.close_kind == "transient"
    # Saved from what happened, not from the plan: the throttled node still waits, tainted.
    assert Node.objects.get(name=closed.node.name).state == "waiting" and TAINT in world.taints(closed.node.name)
    (error,) = kinds("error")
    assert error.allocation_id == first and "RequestLimitExceeded" in error.reason
    reconcile(spec)  # the throttling is over: the waiting node is served
    assert len(world.all_associations()) == 2


class RaceOnAssociate(Ec2):
    """Between the snapshot and the call, something else changes the EIP in AWS."""

    def __init__(self, region: str, before: Any) -> None:
        super().__init__(region)
        self.before = before

    def associate(self, **kwargs: Any) -> str:
        self.before(kwargs["allocation_id"])
        return super().associate(**kwargs)


def test_eip_taken_meanwhile_is_already_associated_error_and_is_not_stolen(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    stranger, eni, ip = world.ec2.launch_instance()

    def taken(alloc: str) -> None:
        world.ec2.client.associate_address(AllocationId=alloc, NetworkInterfaceId=eni, PrivateIpAddress=ip)

    report = reconcile(spec, ec2=RaceOnAssociate("us-east-1", taken))
    assert "AlreadyAssociated" in report.errors[0]
    assert world.all_associations() == {allocation_id: eni}  # AllowReassociation=False: not moved
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()


def test_eip_released_from_the_account_meanwhile_is_not_found(world: World) -> None:
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    report = reconcile(spec, ec2=RaceOnAssociate(
        "us-east-1", lambda alloc: world.ec2.client.release_address(AllocationId=alloc)))
    assert "NotFound" in report.errors[0]
    assert not Assignment.objects.filter(closed_at__isnull=True).exists()
    # One error event, about this node and this EIP, saying what failed; the node stays tainted (I1).
    (error,) = kinds("error")
    assert (error.node, error.allocation_id) == ("a", allocation_id)
    assert "NotFound" in error.reason and "assign" in error.reason
    assert TAINT in world.taints("a") and "eipdash.io/eip" not in world.labels("a")
    assert Node.objects.get(name="a").state == Node.State.WAITING


def test_dry_run_changes_nothing(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    before = list(Event.objects.values_list("pk", flat=True))  # the spec's creation
    report = executor.reconcile_spec(spec.pk, dry_run=True)
    assert any(line.startswith("would assign") for line in report.done)
    assert world.all_associations() == {} and list(Event.objects.values_list("pk", flat=True)) == before
    assert not SpecPlan.objects.exists()  # nor the spec page's plan


# --- the plan a pass keeps for the spec page (services.spec_plan_store, selectors.plan_preview) ----------


def refuse_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, any call of the planner or of its inputs' reader fails: a request must not plan."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request ran the planner")

    for module, name in ((planner, "plan"), (snapshot, "planner_inputs")):
        monkeypatch.setattr(module, name, refuse)
    # Should the selectors ever import them by name again, the patch reaches those names too.
    for name in ("plan_pass", "planner_inputs"):
        monkeypatch.setattr(selectors, name, refuse, raising=False)


def test_a_pass_stores_its_plan_and_the_spec_page_and_the_api_show_it_with_its_age(
    world: World, viewer_client: Client
) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    world.node("b")
    before = timezone.now()
    report = reconcile(spec)
    assert report.plan is not None
    planned = report.plan.describe()
    # One EIP for two nodes: one is assigned, the other keeps waiting.
    assert sum(line.startswith("assign ") for line in planned) == 1
    assert sum(line.endswith("keeps waiting: no free EIP") for line in planned) == 1
    row = SpecPlan.objects.get()
    assert row.spec_id == spec.pk and row.lines == planned and row.drain == []
    assert row.fence == SpecFence.objects.get(spec_id=spec.pk).number  # the pass's own fencing number
    assert before - timedelta(seconds=1) <= row.planned_at <= timezone.now() + timedelta(seconds=1)

    with pytest.MonkeyPatch.context() as patch:
        refuse_planning(patch)
        html = viewer_client.get(reverse("launch-spec-detail", args=[spec.name])).content.decode()
        body = viewer_client.get(f"/api/v1/launch-specs/{spec.name}/plan").json()
    section = html.split('id="plan"', 1)[1].split("</section>", 1)[0]
    assert all(f'<li class="mono">{line}</li>' in section for line in planned)
    assert f"Plan of the pass at <time datetime=\"{row.planned_at:%Y-%m-%dT%H:%M:%SZ}\">" in section
    assert f"{row.planned_at:%H:%M:%S} UTC</time>, " in section and " ago" in section
    assert body["lines"] == planned and datetime.fromisoformat(body["plannedAt"]) == row.planned_at

    # The next pass writes over the same row.
    report = reconcile(spec)
    assert report.plan is not None
    assert SpecPlan.objects.count() == 1
    assert SpecPlan.objects.get().lines == report.plan.describe() and SpecPlan.objects.get().planned_at > row.planned_at


def test_a_dry_run_leaves_the_stored_plan_as_it_was(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    world.node("a")
    reconcile(spec)
    stored = SpecPlan.objects.values_list("lines", "planned_at", "fence").get()
    world.node("b")  # a dry run would assign it
    report = executor.reconcile_spec(spec.pk, dry_run=True)
    assert any(line.startswith("would assign") for line in report.done)
    assert SpecPlan.objects.values_list("lines", "planned_at", "fence").get() == stored


def test_a_pass_that_lost_its_lease_does_not_overwrite_the_newer_holders_plan(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stale pass has planned; before it stores its plan, a newer holder takes the spec and stores its own.
    The stale pass's fenced write is refused: it stops, and the newer plan stays."""
    spec = world.spec()
    world.eips(1)
    world.node("a")
    key = locks.lease_key(spec.pk)
    stale = locks.Lease(key, seconds=10, url=None, spec_id=spec.pk)
    newer = locks.Lease(key, seconds=10, url=None, spec_id=spec.pk)
    assert stale.acquire()
    real_plan = executor.make_plan

    def planned_then_overtaken(*inputs: Any) -> Plan:
        made = real_plan(*inputs)
        assert newer.acquire() and newer.fence > stale.fence
        with newer.fenced():
            assert services.spec_plan_store(spec=spec, plan=Plan(), eips=[], nodes=[], claims={}, fence=newer.fence)
        return made

    monkeypatch.setattr(executor, "make_plan", planned_then_overtaken)
    report = executor.run_pass(spec, lease=stale)
    assert report.plan is None and any("stopped" in line and "lease" in line for line in report.errors)
    row = SpecPlan.objects.get()
    assert (row.fence, row.lines) == (newer.fence, ["nothing to do"])
    assert world.all_associations() == {} and not Assignment.objects.exists()


# The manual reassign is tested in tests/workers/test_reassign.py.


def test_kube_adapter_is_reached_through_the_standard_kubeconfig(world: World) -> None:
    # The executor builds its clients the standard way: KUBECONFIG and AWS_ENDPOINT_URL_EC2.
    spec = world.spec()
    ec2, kube = executor.clients_for(spec)
    assert isinstance(kube, Kube) and ec2.region == "us-east-1"


# --- regressions from the engine review ---------------------------------------------------------


def test_a_second_pool_eip_on_a_node_is_a_conflict_and_the_pass_goes_on(world: World) -> None:
    # AWS keeps one EIP per private IP; the EC2 emulator lets a second one sit beside the first (it also
    # ignores PrivateIpAddress and reports the primary IP). Either way the pass must not stall on it.
    spec = world.spec()
    first, second, third = world.eips(3)
    n = world.node("n")
    reconcile(spec)
    held = world.all_associations()
    other = next(a for a in (first, second, third) if a not in held)
    world.ec2.client.associate_address(AllocationId=other, NetworkInterfaceId=n.eni_id, PrivateIpAddress=n.private_ip)
    world.node("m")
    report = reconcile(spec)
    assert not report.errors, report.errors
    assert world.eip_on_primary("m") is not None and TAINT not in world.taints("m")
    assert world.address(other)["NetworkInterfaceId"] == n.eni_id  # left alone
    assert Assignment.objects.get(node__name="n", closed_at__isnull=True).eip.allocation_id in held
    assert any("second pool EIP" in e.reason for e in kinds("conflict"))


class Refusing(Ec2):
    def __init__(self, region: str, refused: str) -> None:
        super().__init__(region)
        self.refused = refused

    def associate(self, **kwargs: Any) -> str:
        if kwargs["allocation_id"] == self.refused:
            raise Permanent("InvalidAddress.Mismatch", code="InvalidAddress.Mismatch", operation="AssociateAddress")
        return super().associate(**kwargs)


def test_an_eip_that_aws_refuses_does_not_starve_the_waiting_node(world: World) -> None:
    spec = world.spec()
    eips = world.eips(2)
    world.node("n")
    ec2 = Refusing("us-east-1", "")
    ec2.refused = min(eips, key=lambda a: tuple(int(x) for x in world.address(a)["PublicIp"].split(".")))
    reconcile(spec, ec2=ec2)
    assert world.eip_on("n") is None
    reconcile(spec, ec2=ec2)  # the refused EIP is not "most recently released": the other one is tried
    assert world.eip_on("n") not in (None, ec2.refused)


def test_stale_label_after_an_interrupted_release_is_removed(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    world.kube.patch("nodes", "a", {"metadata": {"labels": {"eipdash.io/eip": "198.51.100.9"}}})
    Ec2("us-east-1").disassociate(world.address(world.eip_on("a") or "")["AssociationId"])
    world.cordon("a")
    reconcile(spec)
    assert "eipdash.io/eip" not in world.labels("a")


def test_a_node_whose_instance_ec2_does_not_list_keeps_its_eip(world: World) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)

    class Lagging(Ec2):
        def describe_instances(self, instance_ids: Any) -> dict[str, Any]:
            return {}

    report = reconcile(spec, ec2=Lagging("us-east-1"))
    assert world.eip_on("a") is not None and not kinds("released"), report.lines()


def test_a_node_name_back_on_a_new_instance_is_a_new_node(world: World) -> None:
    spec = world.spec()
    world.eips(2)
    old = world.node("ip-10-0-0-1")
    reconcile(spec)
    first_seen = Node.objects.get(name="ip-10-0-0-1").first_seen_at
    world.ec2.terminate(old.instance_id)
    world.kube.delete("nodes", "ip-10-0-0-1")
    reconcile(spec)
    world.node("ip-10-0-0-1")  # same name, new instance
    reconcile(spec)
    row = Node.objects.get(name="ip-10-0-0-1")
    assert row.instance_id == world.nodes["ip-10-0-0-1"].instance_id and row.first_seen_at > first_seen
    assert world.eip_on("ip-10-0-0-1") is not None and row.eip_ready_at >= row.first_seen_at


def test_a_pass_rewrites_every_column_it_observes(world: World) -> None:
    """The upserts name their update_fields from the mapping that builds the row: a stale value in any
    observed column of Node or ElasticIP is replaced by what AWS and Kubernetes say on the next pass."""
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("a")
    reconcile(spec)
    reconcile(spec)  # steady: the snapshot of this pass already shows the node's EIP label
    node_columns = ["az", "labels", "instance_state", "eni_id", "private_ip", "startup_tainted", "draining",
                    "drain_reason", "foreign_eip", "eip_label", "workload_pods", "deleted_at"]
    eip_columns = ["region", "public_ip", "tags", "association_id", "instance_id", "eni_id", "private_ip", "gone"]
    node_before = Node.objects.filter(name="a").values(*node_columns).get()
    eip_before = ElasticIP.objects.filter(allocation_id=allocation_id).values(*eip_columns).get()
    Node.objects.filter(name="a").update(
        az="junk", labels={"junk": "1"}, instance_state="stopped", eni_id="eni-junk", private_ip="10.9.9.9",
        startup_tainted=True, draining=True, drain_reason="junk", foreign_eip=True, eip_label="junk",
        workload_pods=99)
    ElasticIP.objects.filter(allocation_id=allocation_id).update(
        region="junk-1", public_ip="198.51.100.99", tags={"junk": "1"}, association_id="eipassoc-junk",
        instance_id="i-junk", eni_id="eni-junk", private_ip="10.9.9.9", gone=True)
    # A full pass: one that finds the world as the last quiet pass did reads and writes no row at all
    # (tests/workers/test_observe_quiet.py), until a change in the world or a row's recheck comes.
    SpecFence.objects.filter(spec_id=spec.pk).update(quiet_fingerprint="")
    # ...and a reading saved in full: one equal to the last, with no row written by eipdash since, moves only
    # last_seen_at (tests/workers/test_observe_pool_changes.py).
    RegionFacts.objects.update(addresses_digest="")
    reconcile(spec)
    assert Node.objects.filter(name="a").values(*node_columns).get() == node_before
    assert ElasticIP.objects.filter(allocation_id=allocation_id).values(*eip_columns).get() == eip_before


def test_warm_clients_builds_each_regions_ec2_client_and_each_clusters_kube_client(
    db: None, kubeconfig_path: Path
) -> None:
    """The worker's main process builds them before its pool forks (workers/apps.py), so that no pool
    process pays the SDK's start-up cost on its first pass."""
    from pools.models import Cluster
    from workers import ec2 as ec2_module
    from workers import kube as kube_module
    from workers.executor import warm_clients

    Cluster.objects.create(name="warm-eu", region="eu-west-3", kubeconfig=str(kubeconfig_path))
    Cluster.objects.create(name="broken", region="ap-south-2", kubeconfig="/nonexistent/kubeconfig")
    ec2_module._clients.clear()
    kube_module._clients.clear()
    assert warm_clients() == 1  # the broken cluster's kubeconfig cannot load: skipped, not fatal
    assert {key[0] for key in ec2_module._clients} >= {"eu-west-3", "ap-south-2"}
    assert any(key[1] == str(kubeconfig_path) for key in kube_module._clients)


def test_a_new_holder_leaves_an_older_holders_unconfirmed_claim_in_flight(world: World) -> None:
    """An older holder claimed e for a and lost its lease with its AssociateAddress on the way (a freeze, a
    Redis failover). The next holder must neither close that claim as interrupted (a false `released`) nor
    give a another EIP: the late call would then land beside it. Once the longest such call is over, the claim
    is judged as usual."""
    spec = world.spec()
    first, _ = sorted(world.eips(2))
    a = world.node("a")
    reconcile(spec)  # a gets an EIP; take it back to the start: a waits, with the older holder's claim on first
    held = world.eip_on("a")
    assert held is not None
    world.ec2.client.disassociate_address(AssociationId=world.address(held)["AssociationId"])
    Assignment.objects.filter(closed_at__isnull=True).delete()
    Assignment.objects.create(eip=ElasticIP.objects.get(allocation_id=first), node=Node.objects.get(name="a"),
                              launch_spec=spec, eni_id=a.eni_id, private_ip=a.private_ip, opened_at=timezone.now())
    reconcile(spec)
    claim = Assignment.objects.get(eip__allocation_id=first)
    assert claim.closed_at is None and claim.confirmed_at is None
    assert not kinds("released") and world.all_associations() == {}
    # The older holder's call lands now: a holds first, and only first; the next pass adopts it.
    world.ec2.client.associate_address(AllocationId=first, NetworkInterfaceId=a.eni_id, PrivateIpAddress=a.private_ip)
    reconcile(spec)
    assert world.all_associations() == {first: a.eni_id}
    claim.refresh_from_db()
    assert claim.confirmed_at is not None and claim.closed_at is None and TAINT not in world.taints("a")


def test_an_older_holders_claim_is_judged_once_its_calls_are_over(world: World) -> None:
    spec = world.spec()
    (only,) = world.eips(1)
    a = world.node("a")
    reconcile(spec)  # creates a's row
    world.ec2.client.disassociate_address(AssociationId=world.address(only)["AssociationId"])
    Assignment.objects.all().delete()
    Assignment.objects.create(eip=ElasticIP.objects.get(allocation_id=only), node=Node.objects.get(name="a"),
                              launch_spec=spec, eni_id=a.eni_id, private_ip=a.private_ip, opened_at=timezone.now())
    reconcile(spec)
    assert Assignment.objects.get().closed_at is None  # in flight
    # A lease's time later (as the database's clock counts it), no call of the older holder can still land.
    Assignment.objects.update(stale_since=timezone.now() - timedelta(seconds=60))
    reconcile(spec)  # closes the claim (AWS shows the EIP free)
    reconcile(spec)  # serves a
    assert world.eip_on("a") == only and TAINT not in world.taints("a")


def test_an_older_holders_claim_is_in_flight_only_until_a_lease_time_after_its_last_renewal(
    world: World, redis_url: str
) -> None:
    """The window is counted from the older holder's last renewal, which Redis noted under its fencing number:
    a holder frozen long ago has no call left on its way, and its claim is judged at once (its node is not kept
    waiting for another lease time)."""
    spec = world.spec()
    (only,) = world.eips(1)
    world.node("a")
    reconcile(spec)  # creates a's row
    world.ec2.client.disassociate_address(AssociationId=world.address(only)["AssociationId"])
    Assignment.objects.all().delete()
    frozen = locks.spec_lease_for(spec.pk)
    assert frozen.acquire()
    frozen._stop.set()  # frozen: it renews no more
    services.assignment_open(eip=ElasticIP.objects.get(allocation_id=only), node=Node.objects.get(name="a"),
                             spec=spec, actor="system", fence=frozen.fence)
    client = redis.Redis.from_url(redis_url)
    client.delete(locks.lease_key(spec.pk))  # its lease ran out long ago...
    long_ago = (timezone.now() - timedelta(seconds=60)).timestamp()
    client.hset(redis_keys.renewals(spec.pk), str(frozen.fence), f"{long_ago:.6f}")  # ...after its last renewal
    reconcile(spec)
    claim = Assignment.objects.get()
    assert claim.closed_at is not None and claim.close_kind == Assignment.CloseKind.INTERRUPTED
    reconcile(spec)
    assert world.eip_on("a") == only and TAINT not in world.taints("a")
