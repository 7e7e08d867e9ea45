"""Why a node is where it is (pools/node_reason.py), on plain values: the words the node page shows at its top
and the API's waitingReason, its timeline, and the plan of the next pass read for one node."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from pools import node_reason as nr
from pools.planner import Adopt, Assign, EipView, MarkReady, NodeView, Note, Plan, Release, SpecView, plan
from pools.vocabulary import NoteKind

T0 = datetime(2026, 11, 26, 2, 6, 15, tzinfo=UTC)
NOW = T0 + timedelta(minutes=3)
POOL = nr.PoolFacts(spec="egress-web", enabled=True, size=4, free=0, selector="eipdash.io/pool=egress-web")


def view(name: str = "ip-10-0-1-23", **kw: object) -> NodeView:
    values: dict[str, object] = dict(instance_id="i-0abc", instance_state="running", eni_id="eni-1",
                                     private_ip="10.0.1.23", startup_tainted=True, first_seen_at=T0)
    values.update(kw)
    return NodeView(name=name, **values)  # type: ignore[arg-type]


def facts(**kw: object) -> nr.NodeFacts:
    values: dict[str, object] = dict(view=view(), cluster="prod", state="waiting", first_seen_at=T0, pool=POOL,
                                     next_pass=nr.NextPass(waits=True), waiting_since=T0)
    values.update(kw)
    return nr.NodeFacts(**values)  # type: ignore[arg-type]


def held(confirmed: bool = True) -> nr.Holding:
    return nr.Holding(public_ip="203.0.113.7", allocation_id="eipalloc-7", since=T0 + timedelta(seconds=4),
                      confirmed=confirmed)


def test_a_node_waiting_on_an_exhausted_pool_says_so_with_since_when() -> None:
    reason = nr.node_reason(facts(), NOW)
    assert reason.text == "waiting: the pool of egress-web has 0 free of 4 (since 02:06:15, 3 min)"
    assert reason.waiting and reason.code == "waiting" and reason.tone == "warn"
    assert "eipdash.io/pool=egress-web" in reason.hint


def test_free_eips_that_go_to_older_nodes() -> None:
    reason = nr.node_reason(facts(pool=dataclasses.replace(POOL, free=2)), NOW)
    assert reason.text.startswith("waiting: the pool of egress-web has 2 free of 4, all going to nodes that "
                                  "waited longer")


def test_the_next_pass_assigns_it() -> None:
    reason = nr.node_reason(facts(next_pass=nr.NextPass(assign="203.0.113.9")), NOW)
    assert reason.text == "assigning: the next pass gives it 203.0.113.9 (waiting since 02:06:15, 3 min)"
    assert reason.waiting


def test_a_claim_awaiting_aws() -> None:
    reason = nr.node_reason(facts(holding=held(confirmed=False), next_pass=nr.NextPass()), NOW)
    assert reason.code == "assigning" and reason.waiting
    assert reason.text == "assigning: 203.0.113.7 claimed at 02:06:19, waiting for AWS to confirm it"


def test_not_servable_without_a_primary_private_ipv4() -> None:
    reason = nr.node_reason(facts(view=view(private_ip=None)), NOW)
    assert reason.text.startswith("not servable: no primary private IPv4")
    assert reason.waiting and reason.tone == "bad"


def test_conflicts_a_foreign_eip_and_two_specs() -> None:
    foreign = nr.node_reason(facts(view=view(foreign_eip=True), next_pass=nr.NextPass()), NOW)
    assert foreign.text.startswith("conflict: a non-pool EIP sits on its primary IP")
    assert foreign.waiting and foreign.tone == "bad"
    two = nr.node_reason(facts(view=view(also_matched_by=("egress-batch",)), next_pass=nr.NextPass()), NOW)
    assert two.text.startswith("conflict: launch spec egress-batch matches it too")


def test_ready_holds_its_eip_since_with_the_wait() -> None:
    reason = nr.node_reason(facts(view=view(startup_tainted=False), state="ready", holding=held(),
                                  eip_ready_at=T0 + timedelta(seconds=4), next_pass=nr.NextPass()), NOW)
    assert reason.text == "ready: holds 203.0.113.7 since 02:06:19 (waited 4.0 s)"
    assert not reason.waiting and reason.tone == "ok"
    lifting = nr.node_reason(facts(state="ready", holding=held(), next_pass=nr.NextPass(lift=True)), NOW)
    assert lifting.code == "ready" and "the next pass lifts its startup taint" in lifting.text


def test_draining_keeps_its_eip_until_the_workload_pods_are_gone() -> None:
    drains = view(draining=True, drain_reason="cluster-autoscaler", workload_pods=3, startup_tainted=False)
    reason = nr.node_reason(facts(view=drains, state="draining", holding=held()), NOW)
    assert reason.text == ("draining (cluster-autoscaler): 3 workload pods; its EIP 203.0.113.7 stays until they "
                           "are gone")
    assert not reason.waiting
    drained = nr.node_reason(facts(view=dataclasses.replace(drains, workload_pods=0), holding=held()), NOW)
    assert drained.text == "draining (cluster-autoscaler): no workload pods left; the next pass releases 203.0.113.7"
    uncounted = nr.node_reason(facts(view=dataclasses.replace(drains, workload_pods=None), holding=held()), NOW)
    assert "workload pods are not counted yet" in uncounted.text


def test_released_and_gone() -> None:
    release = nr.LastRelease(at=T0 + timedelta(minutes=1), public_ip="203.0.113.7",
                             reason="drained (cordoned): no workload pods left")
    released = nr.node_reason(facts(view=view(draining=True, drain_reason="cordoned"), state="released",
                                    last_release=release, eip_ready_at=T0), NOW)
    assert released.text == ("released: gave 203.0.113.7 back at 02:07:15 (drained (cordoned): no workload pods "
                             "left); the node drains (cordoned)")
    assert not released.waiting
    gone = nr.node_reason(facts(view=view(in_cluster=False), state="gone", deleted_at=T0 + timedelta(minutes=2)), NOW)
    assert gone.text == "gone: deleted from the cluster at 02:08:15 (1 min ago), without ever getting an EIP"
    assert not gone.waiting and gone.tone == "muted"
    holding = nr.node_reason(facts(view=view(instance_state="terminated"), state="gone", holding=held()), NOW)
    assert holding.text == "gone: its instance is terminated; the next pass releases 203.0.113.7"
    pruned = nr.history_only_reason(T0, NOW)
    assert pruned.code == "gone" and "only its history" in pruned.text


def test_not_ours_disabled_or_not_matched() -> None:
    no_spec = nr.node_reason(facts(pool=None, next_pass=None), NOW)
    assert no_spec.text.startswith("not matched: no launch spec matches its labels")
    assert "startup taint" in no_spec.text and no_spec.waiting  # tainted: stuck, and the API says why
    untainted = nr.node_reason(facts(pool=None, next_pass=None, view=view(startup_tainted=False)), NOW)
    assert not untainted.waiting
    moved = nr.node_reason(facts(view=view(matches_spec=False), next_pass=nr.NextPass()), NOW)
    assert moved.text.startswith("not matched: its labels no longer match launch spec egress-web")
    disabled = nr.node_reason(facts(pool=dataclasses.replace(POOL, enabled=False), next_pass=nr.NextPass()), NOW)
    assert disabled.text.startswith("disabled spec: egress-web is disabled")
    assert disabled.waiting


def test_reading_failures_and_unknown_instances_block_it() -> None:
    failing = dataclasses.replace(POOL, alerts=frozenset({"read-failed:kubeconfig"}))
    blocked = nr.node_reason(facts(pool=failing), NOW)
    assert blocked.text.startswith("blocked: reading AWS or Kubernetes fails for egress-web")
    unknown = nr.node_reason(facts(view=view(instance_state="unknown")), NOW)
    assert unknown.text == "waiting for EC2: DescribeInstances does not list its instance i-0abc yet"


def test_the_planner_decides_the_next_pass_of_one_node() -> None:
    """The plan preview's own decisions, read for one node: who gets the free EIP, who waits."""
    spec = SpecView(name="egress-web", tag_key="eipdash.io/pool", tag_value="egress-web")
    older = view("ip-10-0-1-2", first_seen_at=T0 - timedelta(minutes=1), eni_id="eni-2", private_ip="10.0.1.2")
    newer = view("ip-10-0-1-23")
    result = plan(spec, [EipView(allocation_id="eipalloc-9", public_ip="203.0.113.9")], [older, newer], {})
    first, second = nr.next_pass_of(result, older.name), nr.next_pass_of(result, newer.name)
    assert first.assign == "203.0.113.9" and not first.waits
    assert second.waits and not second.assign
    # The preview's own lines for this node, and not those of a node whose name contains it.
    assert second.lines == ("pool_exhausted: 2 nodes need an EIP and the pool has 1 free (1 in the pool); waiting: "
                            "ip-10-0-1-23", "ip-10-0-1-23 keeps waiting: no free EIP")
    assert first.lines == ("assign 203.0.113.9 → ip-10-0-1-2",)
    # The pool_exhausted event it recorded names the waiting node, and only that one.
    (note,) = result.notes
    assert nr.waiting_names(note.reason) == ["ip-10-0-1-23"]


def _event(at: datetime, kind: str, *, ip: str = "", reason: str = "", actor: str = "system") -> SimpleNamespace:
    return SimpleNamespace(timestamp=at, kind=kind, public_ip=ip, allocation_id="", reason=reason, actor=actor, pk=1)


def test_the_timeline_from_first_seen_in_time_order_with_the_wait() -> None:
    events = [
        _event(T0 + timedelta(minutes=4), "assigned", ip="203.0.113.7", reason="new node"),
        _event(T0 + timedelta(minutes=4), "taint_lifted", ip="203.0.113.7", reason="EIP confirmed"),
        _event(T0 + timedelta(seconds=1), "pool_exhausted", reason="1 node needs an EIP ... waiting: ip-10-0-1-23"),
        _event(T0 + timedelta(minutes=30), "released", ip="203.0.113.7", reason="drained (cordoned): no workload "
                                                                                "pods left"),
    ]
    gone = facts(view=view(in_cluster=False, draining=True, drain_reason="cordoned"), state="gone",
                 deleted_at=T0 + timedelta(minutes=31), eip_ready_at=T0 + timedelta(minutes=4))
    # Oldest first, as the selector reads them (by time, then id: the order they were recorded in).
    moments = nr.node_timeline(gone, sorted(events, key=lambda e: e.timestamp), NOW)
    assert [m.what for m in moments] == ["registered", "pool exhausted", "assigned", "taint lifted", "released",
                                         "gone"]
    assert moments[2].detail == "203.0.113.7 after waiting 4 min"
    assert moments[0].at == T0 and moments[-1].at == T0 + timedelta(minutes=31)


def test_the_timeline_of_a_waiting_and_a_draining_node_ends_with_now() -> None:
    waiting = nr.node_timeline(facts(), [], NOW)
    assert [(m.what, m.at) for m in waiting] == [("registered", T0), ("waiting", T0)]
    assert waiting[1].detail == "for an EIP, 3 min so far"
    drains = view(draining=True, drain_reason="karpenter", workload_pods=2, startup_tainted=False)
    draining = nr.node_timeline(facts(view=drains, holding=held(), state="draining", eip_ready_at=T0), [], NOW)
    assert [m.what for m in draining] == ["registered", "EIP confirmed", "draining"]
    assert draining[-1].at is None and draining[-1].detail == "karpenter: 2 workload pods, as the last pass saw it"


def test_taints_and_what_they_mean() -> None:
    drains = view(draining=True, drain_reason="cordoned")
    notes = dict(nr.taint_notes(facts(view=drains), "eipdash.io/eip-pending"))
    assert list(notes) == ["eipdash.io/eip-pending:NoSchedule", "node.kubernetes.io/unschedulable:NoSchedule"]
    assert "lifts it once AWS confirms" in notes["eipdash.io/eip-pending:NoSchedule"]
    karpenter = dict(nr.taint_notes(facts(view=view(draining=True, drain_reason="karpenter",
                                                          startup_tainted=False)), "eipdash.io/eip-pending"))
    assert list(karpenter) == ["karpenter.sh/disrupted:NoSchedule"]


def test_the_kubernetes_events_it_points_to_are_the_workers() -> None:
    from workers import kube_events

    written = {reason for _type, reason, _action in kube_events.EMITTED.values()} | {"EIPPending"}
    assert {reason for reason, _meaning in nr.KUBE_EVENT_REASONS} == written
    assert nr.kubectl_events_command("ip-10-0-1-23", context="prod-eu") == (
        "kubectl --context=prod-eu get events -n default --field-selector="
        "involvedObject.kind=Node,involvedObject.name=ip-10-0-1-23")
    assert nr.kubectl_events_command("a b") == (
        "kubectl get events -n default --field-selector='involvedObject.kind=Node,involvedObject.name=a b'")
    # A cluster with a file of its own is read through it (else the reader's current context, maybe another
    # cluster's, answers "no events"); a value starting with "-" stays a value of its flag.
    assert nr.kubectl_events_command("n", context="--kubeconfig=/tmp/evil", kubeconfig="/etc/eipdash/kube/eu") == (
        "kubectl --kubeconfig=/etc/eipdash/kube/eu --context=--kubeconfig=/tmp/evil get events -n default "
        "--field-selector=involvedObject.kind=Node,involvedObject.name=n")


def test_next_pass_of_lines_reads_the_same_decisions_from_a_stored_plan() -> None:
    """What a pass stores is Plan.describe() (SpecPlan.lines): read for one node, the same NextPass as the plan
    itself gives, for every kind of line, and nothing of a node whose name contains another's."""
    names = ["ip-10-0-1-2", "ip-10-0-1-23", "ip-10-0-1-2.ec2.internal", "n-lift", "n-label", "n-both", "n-wait",
             "n-defer", "n-taint", "n-release", "n-adopt", "n-unmark", "n-none"]
    stored = Plan(
        assign=(Assign("eipalloc-1", "203.0.113.1", "ip-10-0-1-2", "eni-1", "10.0.1.2"),
                Assign("eipalloc-2", "203.0.113.2", "ip-10-0-1-2.ec2.internal", "eni-2", "10.0.1.3")),
        release=(Release("eipalloc-3", "203.0.113.3", "n-release", "node gone", None),),
        adopt=(Adopt("eipalloc-4", "203.0.113.4", "n-adopt", "eipassoc-4", "found on its ENI"),),
        ready=(MarkReady("n-lift", "eipalloc-5", "203.0.113.5", lift_taint=True, set_marks=False),
               MarkReady("n-label", "eipalloc-6", "203.0.113.6", lift_taint=False, set_marks=True),
               MarkReady("n-both", "eipalloc-7", "203.0.113.7", lift_taint=True, set_marks=True)),
        notes=(Note(kind=NoteKind.POOL_EXHAUSTED, key="pool_exhausted",
                    reason="2 nodes need an EIP and the pool has 0 free (9 in the pool); waiting: ip-10-0-1-23, "
                           "n-wait"),),
        waiting=("ip-10-0-1-23", "n-wait"),
        deferred=("n-defer",),
        taint=("n-taint",),
        unmark=("n-unmark",),
    )
    lines = stored.describe()
    for name in names:
        assert nr.next_pass_of_lines(lines, name) == nr.next_pass_of(stored, name), name
    assert nr.next_pass_of_lines(lines, "ip-10-0-1-2").assign == "203.0.113.1"
    assert nr.next_pass_of_lines(lines, "ip-10-0-1-23").waits
    assert nr.next_pass_of_lines(lines, "n-both").lift and not nr.next_pass_of_lines(lines, "n-label").lift
    assert nr.next_pass_of_lines(lines, "n-defer").deferred
    assert nr.next_pass_of_lines(["nothing to do"], "n-none") == nr.NextPass()
