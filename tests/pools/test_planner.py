"""Every planner rule, on plain values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from pools.alerts import Alert, alert_key
from pools.planner import (
    Claim,
    EipView,
    NodeView,
    SpecView,
    claim_outlived_its_node,
    free_order_key,
    plan,
)

SPEC = SpecView(name="ingress", tag_key="pool", tag_value="ingress")
T0 = datetime(2026, 11, 26, 3, 12, tzinfo=UTC)


def node(name: str, n: int, **kw: object) -> NodeView:
    defaults: dict[str, object] = dict(
        instance_id=f"i-{n:04x}", instance_state="running", eni_id=f"eni-{n}", private_ip=f"10.0.0.{n}",
        startup_tainted=True,
    )
    defaults.update(kw)
    return NodeView(name=name, **defaults)  # type: ignore[arg-type]


def eip(n: int, *, on: NodeView | None = None, **kw: object) -> EipView:
    assoc = dict(association_id=f"eipassoc-{n}", eni_id=on.eni_id, private_ip=on.private_ip) if on else {}
    return EipView(allocation_id=f"eipalloc-{n}", public_ip=f"203.0.113.{n}", **assoc, **kw)  # type: ignore[arg-type]


def test_new_nodes_get_free_eips_tainted_or_not() -> None:
    a, b = node("a", 1), node("b", 2, startup_tainted=False)
    result = plan(SPEC, [eip(1), eip(2)], [a, b], {})
    assert {(x.node, x.allocation_id) for x in result.assign} == {("a", "eipalloc-1"), ("b", "eipalloc-2")}
    assert result.assign[0].eni_id == "eni-1" and result.assign[0].private_ip == "10.0.0.1"
    assert not result.notes and not result.waiting


def test_node_that_is_not_running_or_is_draining_gets_nothing() -> None:
    nodes = [
        node("stopped", 1, instance_state="stopped"),
        node("terminated", 2, instance_state="terminated"),
        node("draining", 3, draining=True, workload_pods=2),
        node("pending", 4, instance_state="pending"),
    ]
    result = plan(SPEC, [eip(1), eip(2), eip(3)], nodes, {})
    assert [a.node for a in result.assign] == ["pending"]


def test_most_recently_released_eip_goes_first_then_stable_order() -> None:
    old = eip(1, last_released_at=T0)
    recent = eip(9, last_released_at=T0 + timedelta(minutes=5))
    never = eip(5)
    result = plan(SPEC, [never, old, recent], [node("a", 1, first_seen_at=T0), node("b", 2, first_seen_at=T0 +
                  timedelta(seconds=1)), node("c", 3, first_seen_at=T0 + timedelta(seconds=2))], {})
    assert [(a.node, a.public_ip) for a in result.assign] == [
        ("a", "203.0.113.9"), ("b", "203.0.113.1"), ("c", "203.0.113.5")]


def test_free_order_is_numeric_not_lexical() -> None:
    result = plan(SPEC, [eip(10), eip(9)], [node("a", 1)], {})
    assert result.assign[0].public_ip == "203.0.113.9"


def test_node_with_foreign_eip_gets_a_conflict_and_is_never_touched() -> None:
    result = plan(SPEC, [eip(1)], [node("a", 1, foreign_eip=True)], {})
    assert not result.assign and not result.ready
    assert [n.kind for n in result.notes] == ["conflict"]
    assert result.node_states["a"] == "conflict"


def test_pool_eip_on_a_node_without_record_is_adopted_and_the_node_made_ready() -> None:
    a = node("a", 1)
    result = plan(SPEC, [eip(1, on=a)], [a], {})
    assert [(x.node, x.allocation_id, x.association_id) for x in result.adopt] == [("a", "eipalloc-1", "eipassoc-1")]
    assert result.ready[0].lift_taint and result.ready[0].set_marks
    assert not result.assign


def test_unconfirmed_claim_found_associated_is_adopted_crash_after_aws_call() -> None:
    a = node("a", 1)
    result = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a", confirmed=False)})
    assert len(result.adopt) == 1 and result.adopt[0].supersedes is None


def test_unconfirmed_claim_with_eip_free_is_closed_and_the_node_served_on_the_next_pass() -> None:
    result = plan(SPEC, [eip(1)], [node("a", 1)], {"eipalloc-1": Claim("a", confirmed=False)})
    assert [(r.node, r.association_id, r.kind, r.if_still_there) for r in result.release] == [
        ("a", None, "interrupted", "keep")]
    assert not result.assign and result.deferred == ("a",)
    # The next pass (the claim is closed) serves it.
    assert [(a.node, a.allocation_id) for a in plan(SPEC, [eip(1)], [node("a", 1)], {}).assign] == [
        ("a", "eipalloc-1")]


def test_held_and_confirmed_eip_only_lifts_the_taint_once() -> None:
    a = node("a", 1)
    claims = {"eipalloc-1": Claim("a")}
    first = plan(SPEC, [eip(1, on=a)], [a], claims)
    assert first.ready and first.ready[0].lift_taint and not first.adopt
    done = node("a", 1, startup_tainted=False, eip_label="203.0.113.1")
    assert plan(SPEC, [eip(1, on=done)], [done], claims).is_empty


def test_pool_eip_on_an_instance_that_is_not_a_node_of_the_spec_is_a_conflict_left_alone() -> None:
    stranger = node("stranger", 7)
    result = plan(SPEC, [eip(1, on=stranger, instance_id="i-0007")], [node("a", 1)], {})
    assert not result.assign and not result.release and not result.adopt
    assert [n.key for n in result.notes] == ["eip-foreign:eipalloc-1", alert_key(Alert.POOL_EXHAUSTED)]
    assert alert_key(Alert.POOL_EXHAUSTED) in result.alerts  # the one node waits: the only EIP is taken


def test_eip_selected_by_two_specs_is_assigned_by_neither() -> None:
    result = plan(SPEC, [eip(1, also_selected_by=("egress",))], [node("a", 1)], {})
    assert not result.assign
    assert {n.key for n in result.notes} == {"eip-two-specs:eipalloc-1", alert_key(Alert.POOL_EXHAUSTED)}


def test_node_matched_by_two_specs_gets_nothing() -> None:
    result = plan(SPEC, [eip(1)], [node("a", 1, also_matched_by=("egress",))], {})
    assert not result.assign and result.notes[0].key == "node-two-specs:a"


def test_draining_node_keeps_its_eip_while_workload_pods_run() -> None:
    a = node("a", 1, draining=True, workload_pods=1, startup_tainted=False)
    result = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a")})
    assert not result.release and result.node_states["a"] == "draining"


def test_draining_node_with_uncounted_pods_keeps_its_eip() -> None:
    a = node("a", 1, draining=True, workload_pods=None)
    assert not plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a")}).release


def test_drained_node_releases_its_eip_with_a_disassociation() -> None:
    a = node("a", 1, draining=True, workload_pods=0)
    result = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.association_id, r.reason) for r in result.release] == [
        ("a", "eipassoc-1", "drained: no workload pods left")]
    assert result.node_states["a"] == "released"
    assert not result.assign  # the EIP goes back to the pool on the next pass


def test_gone_node_releases_whether_or_not_aws_still_shows_the_association() -> None:
    gone = node("a", 1, in_cluster=False)
    # The EC2 emulator keeps the association after terminate.
    kept = plan(SPEC, [eip(1, on=gone)], [gone], {"eipalloc-1": Claim("a")})
    assert [(r.association_id, r.reason) for r in kept.release] == [("eipassoc-1", "node deleted")]
    # AWS drops it: only the record is closed.
    dropped = plan(SPEC, [eip(1)], [gone], {"eipalloc-1": Claim("a")})
    assert [(r.association_id, r.reason) for r in dropped.release] == [(None, "node deleted")]


def test_terminated_instance_releases_even_while_the_node_object_remains() -> None:
    for state in ("shutting-down", "terminated", "gone"):
        a = node("a", 1, instance_state=state)
        result = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a")})
        assert [r.reason for r in result.release] == [f"instance {state}"]


def test_stopped_instance_keeps_its_eip() -> None:
    a = node("a", 1, instance_state="stopped", startup_tainted=False)
    result = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a")})
    assert result.is_empty and result.node_states["a"] == "stopped"


def test_exhaustion_keeps_nodes_waiting_and_alerts_once_per_episode() -> None:
    nodes = [node(n, i + 1, first_seen_at=T0 + timedelta(seconds=i)) for i, n in enumerate("abcd")]
    first = plan(SPEC, [eip(1), eip(2), eip(3)], nodes, {})
    assert [a.node for a in first.assign] == ["a", "b", "c"]
    assert first.waiting == ("d",)
    assert [n.kind for n in first.notes] == ["pool_exhausted"]
    # The next pass, still exhausted: no new note, the alert stays active.
    again = plan(SpecView("ingress", "pool", "ingress", active_alerts=first.alerts), [], nodes[3:], {})
    assert not again.notes and alert_key(Alert.POOL_EXHAUSTED) in again.alerts
    # Capacity back: the alert clears, so a later shortage is a new episode.
    cleared = plan(SpecView("ingress", "pool", "ingress", active_alerts=first.alerts), [eip(4)], nodes[3:], {})
    assert alert_key(Alert.POOL_EXHAUSTED) not in cleared.alerts and len(cleared.assign) == 1


def test_claim_for_eip_now_on_another_node_of_the_spec_is_superseded() -> None:
    a, b = node("a", 1), node("b", 2)
    result = plan(SPEC, [eip(1, on=b)], [a, b], {"eipalloc-1": Claim("a")})
    assert [(x.node, x.supersedes, x.retaint_superseded) for x in result.adopt] == [("b", "a", True)]
    assert result.deferred == ("a",) and not result.assign


def test_claim_for_eip_moved_to_a_stranger_closes_the_record_without_pulling_the_eip() -> None:
    a, stranger = node("a", 1), node("s", 9)
    result = plan(SPEC, [eip(1, on=stranger)], [a], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.association_id) for r in result.release] == [("a", None)]


def test_node_whose_labels_moved_away_keeps_its_eip_until_it_drains() -> None:
    a = node("a", 1, matches_spec=False, startup_tainted=False)
    result = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a")})
    assert result.is_empty
    gone = node("a", 1, matches_spec=False, draining=True, workload_pods=0)
    assert plan(SPEC, [eip(1, on=gone)], [gone], {"eipalloc-1": Claim("a")}).release


def test_node_without_eni_information_is_not_assigned() -> None:
    result = plan(SPEC, [eip(1)], [node("a", 1, eni_id=None, private_ip=None)], {})
    assert not result.assign


def test_describe_reads_like_a_plan() -> None:
    a = node("a", 1)
    lines = plan(SPEC, [eip(2)], [a, node("b", 2)], {}).describe()
    assert "assign 203.0.113.2 → a" in lines
    assert any("keeps waiting" in line for line in lines)
    assert plan(SPEC, [], [], {}).describe() == ["nothing to do"]


def test_claim_for_eip_that_left_the_pool_closes_the_record_only() -> None:
    a = node("a", 1, startup_tainted=False)
    result = plan(SPEC, [], [a], {"eipalloc-7": Claim("a")})
    assert [(r.allocation_id, r.node, r.association_id) for r in result.release] == [("eipalloc-7", "a", None)]


def test_draining_node_without_an_eip_shows_released() -> None:
    a = node("a", 1, draining=True, workload_pods=3)
    assert plan(SPEC, [], [a], {}).node_states["a"] == "released"


def test_contested_eip_on_a_node_still_counts_as_held() -> None:
    a = node("a", 1)
    result = plan(SPEC, [eip(1, on=a, also_selected_by=("egress",)), eip(2)], [a], {})
    assert not result.assign  # a second EIP would knock the first off the node in AWS


def test_pool_eip_on_a_secondary_ip_of_the_primary_eni_is_not_the_nodes() -> None:
    a = node("a", 1)
    on_pod_ip = EipView("eipalloc-1", "203.0.113.1", association_id="eipassoc-1", eni_id=a.eni_id,
                        private_ip="10.0.9.9")
    result = plan(SPEC, [on_pod_ip, eip(2)], [a], {})
    assert not result.adopt and not result.ready  # the taint stays: the node's own IP has no EIP yet
    assert [(x.node, x.allocation_id) for x in result.assign] == [("a", "eipalloc-2")]
    assert "secondary IP" in result.notes[0].reason


def test_stale_eip_label_is_removed() -> None:
    a = node("a", 1, startup_tainted=False, eip_label="203.0.113.7")
    assert plan(SPEC, [], [a], {}).unmark == ("a",)
    held = node("b", 2, startup_tainted=False, eip_label="203.0.113.2")
    assert plan(SPEC, [eip(2, on=held)], [held], {"eipalloc-2": Claim("b")}).is_empty


def test_an_eip_refused_since_its_release_goes_last() -> None:
    refused = eip(1, last_released_at=T0, last_refused_at=T0 + timedelta(minutes=1))
    result = plan(SPEC, [refused, eip(2)], [node("a", 1)], {})
    assert result.assign[0].allocation_id == "eipalloc-2"


def test_a_claim_in_flight_is_left_to_the_process_that_holds_it() -> None:
    a, b = node("a", 1), node("b", 2)
    in_flight = {"eipalloc-1": Claim("a", confirmed=False, in_flight=True)}
    free = plan(SPEC, [eip(1), eip(2)], [a], in_flight)
    assert free.is_empty  # neither closed as a crash nor a second EIP for the node
    # Nor given to another node: its AssociateAddress may still land on a.
    assert [(s.node, s.allocation_id) for s in plan(SPEC, [eip(1)], [a, b], in_flight).assign] == []


def test_a_claim_in_flight_that_landed_on_its_node_is_confirmed() -> None:
    """Once AWS shows the EIP on the claimed node, the call has landed: nothing of it is left in flight."""
    a = node("a", 1)
    on = plan(SPEC, [eip(1, on=a)], [a], {"eipalloc-1": Claim("a", confirmed=False, in_flight=True)})
    assert [(x.node, x.reason) for x in on.adopt] == [("a", "association confirmed after an interrupted pass")]
    assert not on.assign and not on.release and on.ready[0].lift_taint


# --- issue 8: the promise under real AWS and Kubernetes behaviour ------------------------------------


def test_a_live_node_that_gives_its_eip_back_is_retainted_first() -> None:
    drained = node("a", 1, draining=True, workload_pods=0, startup_tainted=False)
    result = plan(SPEC, [eip(1, on=drained)], [drained], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.retaint) for r in result.release] == [("a", True)]
    # A deleted node, a dead instance or a node whose labels left the spec is not tainted.
    for gone in (node("a", 1, in_cluster=False), node("a", 1, instance_state="terminated"),
                 node("a", 1, matches_spec=False, draining=True, workload_pods=0)):
        assert [r.retaint for r in plan(SPEC, [eip(1, on=gone)], [gone], {"eipalloc-1": Claim("a")}).release] == [
            False]


def test_a_schedulable_node_without_an_eip_is_tainted() -> None:
    # An uncordoned node whose EIP went to another node while the pool is exhausted.
    bare = node("a", 1, startup_tainted=False)
    holder = node("b", 2, startup_tainted=False, eip_label="203.0.113.1")
    result = plan(SPEC, [eip(1, on=holder)], [bare, holder], {"eipalloc-1": Claim("b")})
    assert result.taint == ("a",) and result.waiting == ("a",)
    # Tainted already, draining, or holding its EIP: nothing to add.
    assert not plan(SPEC, [], [node("a", 1)], {}).taint
    assert not plan(SPEC, [], [node("a", 1, startup_tainted=False, draining=True)], {}).taint
    assert not plan(SPEC, [eip(1, on=holder)], [holder], {"eipalloc-1": Claim("b")}).taint


def test_an_eip_shown_free_under_a_busy_node_is_rechecked_and_the_node_gets_nothing_else() -> None:
    a = node("a", 1, startup_tainted=False, eip_label="203.0.113.1")
    # A stale DescribeAddresses shows the confirmed EIP free.
    result = plan(SPEC, [eip(1), eip(2)], [a], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.reason, r.if_still_there, r.association_id) for r in result.release] == [
        ("a", "association lost", "keep", None)]
    assert not result.assign and result.deferred == ("a",)


def test_a_gone_node_whose_eip_shows_free_is_pulled_if_a_recheck_finds_it() -> None:
    gone = node("a", 1, in_cluster=False)
    result = plan(SPEC, [eip(1)], [gone], {"eipalloc-1": Claim("a")})
    assert [(r.reason, r.if_still_there, r.kind) for r in result.release] == [
        ("node deleted", "disassociate", "released")]


def test_nodes_without_a_primary_ipv4_do_not_take_a_free_eips_turn() -> None:
    blind = node("blind", 1, eni_id=None, private_ip=None, first_seen_at=T0)
    no_ip = node("no-ip", 2, private_ip=None, first_seen_at=T0)
    servable = node("ok", 3, first_seen_at=T0 + timedelta(seconds=5))
    result = plan(SPEC, [eip(1)], [blind, no_ip, servable], {})
    assert [(a.node, a.allocation_id) for a in result.assign] == [("ok", "eipalloc-1")]
    assert alert_key(Alert.POOL_EXHAUSTED) not in result.alerts
    assert {n.key for n in result.notes} == {"node-no-ipv4:blind", "node-no-ipv4:no-ip"}
    assert all("no primary private IPv4" in n.reason for n in result.notes)


def test_a_contested_eip_still_follows_the_release_and_close_rules() -> None:
    drained = node("a", 1, draining=True, workload_pods=0)
    contested = eip(1, on=drained, also_selected_by=("egress",))
    result = plan(SPEC, [contested], [drained], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.association_id) for r in result.release] == [("a", "eipassoc-1")]
    # Free in AWS with a record of a deleted node: the record closes; the EIP is still not assigned.
    gone, waiting = node("a", 1, in_cluster=False), node("b", 2)
    result = plan(SPEC, [eip(1, also_selected_by=("egress",))], [gone, waiting], {"eipalloc-1": Claim("a")})
    assert [r.node for r in result.release] == ["a"] and not result.assign
    # On a stranger with our record: the record closes, the EIP stays where it is.
    result = plan(SPEC, [eip(1, on=node("s", 9), also_selected_by=("egress",))], [], {"eipalloc-1": Claim("a")})
    assert [(r.reason, r.association_id) for r in result.release] == [("moved outside eipdash", None)]


def test_an_eip_freed_in_this_pass_goes_before_one_released_earlier() -> None:
    gone = node("gone", 1, in_cluster=False)
    new = node("new", 2)
    earlier = eip(2, last_released_at=T0)
    result = plan(SPEC, [eip(1), earlier], [gone, new], {"eipalloc-1": Claim("gone")})
    assert [(a.node, a.allocation_id) for a in result.assign] == [("new", "eipalloc-1")]
    assert free_order_key(eip(1), True) < free_order_key(earlier)


def test_a_disabled_spec_drains_assigns_nothing_and_taints_nothing() -> None:
    off = SpecView(name="ingress", tag_key="pool", tag_value="ingress", enabled=False)
    drained = node("a", 1, draining=True, workload_pods=0)
    new = node("b", 2, startup_tainted=False)
    result = plan(off, [eip(1, on=drained), eip(2)], [drained, new], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.retaint) for r in result.release] == [("a", False)]
    assert not result.assign and not result.taint and alert_key(Alert.POOL_EXHAUSTED) not in result.alerts
    gone = node("c", 3, in_cluster=False)
    assert [r.node for r in plan(off, [eip(3)], [gone], {"eipalloc-3": Claim("c")}).release] == ["c"]


def test_a_release_that_closes_another_nodes_record_defers_that_node_too() -> None:
    # The reading shows a's EIP on b, which drained: the release closes a's record, so a waits a pass
    # (the executor re-reads first) instead of being tainted or given a second EIP now.
    a = node("a", 1, startup_tainted=False, eip_label="203.0.113.1")
    b = node("b", 2, draining=True, workload_pods=0)
    result = plan(SPEC, [eip(1, on=b), eip(2)], [a, b], {"eipalloc-1": Claim("a")})
    assert [(r.node, r.allocation_id) for r in result.release] == [("b", "eipalloc-1")]
    assert "a" in result.deferred and not result.taint and not result.assign


def test_an_eip_left_on_the_eni_of_a_node_whose_name_went_to_another_instance_is_pulled_back() -> None:
    # The claim was made for eni-1; the node called "a" now runs on another instance (eni-2), and AWS
    # (or the EC2 emulator, which keeps associations after terminate) still shows the EIP on eni-1.
    reborn = node("a", 2)
    old_place = EipView("eipalloc-1", "203.0.113.1", association_id="eipassoc-1", eni_id="eni-1",
                        private_ip="10.0.0.1")
    claims = {"eipalloc-1": Claim("a", eni_id="eni-1", private_ip="10.0.0.1")}
    result = plan(SPEC, [old_place], [reborn], claims)
    assert [(r.node, r.association_id, r.kind) for r in result.release] == [("a", "eipassoc-1", "released")]
    assert not any(n.kind == "conflict" for n in result.notes)
    # Elsewhere than where we put it: a stranger's, left alone; only the record closes.
    moved = plan(SPEC, [old_place], [reborn], {"eipalloc-1": Claim("a", eni_id="eni-7", private_ip="10.0.0.7")})
    assert [(r.association_id, r.reason) for r in moved.release] == [(None, "moved outside eipdash")]


def test_a_claim_made_for_the_previous_instance_of_a_name_is_not_kept_on_a_stale_reading() -> None:
    # The reading shows the EIP free; the claim was made for eni-1, but the node called "a" now runs on
    # another instance (eni-2). If the executor's re-read finds the EIP on eni-1, that is the dead
    # instance's, not a stale reading: pull it (it goes back to the pool) instead of keeping the claim.
    free_now = EipView("eipalloc-1", "203.0.113.1")
    claims = {"eipalloc-1": Claim("a", eni_id="eni-1", private_ip="10.0.0.1")}
    reborn = node("a", 2, startup_tainted=False)
    assert claim_outlived_its_node(claims["eipalloc-1"], reborn)

    result = plan(SPEC, [free_now], [reborn], claims)

    assert [(r.node, r.reason, r.if_still_there, r.kind, r.replaced, r.retaint) for r in result.release] == [
        ("a", "node replaced: its name now belongs to another instance", "disassociate", "released", True, True)]
    # The new instance is served as a new node, from the next pass (the release taints it first).
    assert result.deferred == ("a",) and not result.assign and not result.taint
    # A claim that never reached AWS for the previous instance closes as interrupted, pulled all the same.
    unconfirmed = plan(SPEC, [free_now], [reborn], {"eipalloc-1": Claim("a", confirmed=False, eni_id="eni-1")})
    assert [(r.if_still_there, r.kind, r.replaced) for r in unconfirmed.release] == [
        ("disassociate", "interrupted", True)]

    # Still the same instance (the same primary ENI): one reading is not enough, the re-read may keep it.
    same = plan(SPEC, [free_now], [node("a", 1)], claims)
    assert not claim_outlived_its_node(claims["eipalloc-1"], node("a", 1))
    assert [(r.reason, r.if_still_there, r.replaced) for r in same.release] == [("association lost", "keep", False)]
    # The new instance's ENI is not known yet: the ENI cannot tell, the executor's re-read asks the
    # instance behind the claim's ENI.
    unlisted = node("a", 2, eni_id=None, private_ip=None, instance_state="unknown")
    assert not claim_outlived_its_node(claims["eipalloc-1"], unlisted)
    assert [r.if_still_there for r in plan(SPEC, [free_now], [unlisted], claims).release] == ["keep"]


def test_an_eip_pulled_from_a_replaced_nodes_old_eni_leaves_the_new_nodes_marks_and_taints_it() -> None:
    old_place = EipView("eipalloc-1", "203.0.113.1", association_id="eipassoc-1", eni_id="eni-1",
                        private_ip="10.0.0.1")
    claims = {"eipalloc-1": Claim("a", eni_id="eni-1", private_ip="10.0.0.1")}
    result = plan(SPEC, [old_place], [node("a", 2, startup_tainted=False)], claims)
    assert [(r.association_id, r.replaced, r.retaint) for r in result.release] == [("eipassoc-1", True, True)]
    assert result.deferred == ("a",)


def test_planner_taints_a_node_whose_eip_left_the_pool() -> None:
    a = NodeView(name="a", instance_id="i-1", instance_state="running", eni_id="eni-1", private_ip="10.0.0.1")
    free = EipView(allocation_id="eipalloc-2", public_ip="203.0.113.2")
    result = plan(SpecView("ingress", "pool", "ingress"), [free], [a], {"eipalloc-9": Claim(node="a")})
    (release,) = result.release
    assert release.allocation_id == "eipalloc-9" and release.retaint
    assert result.deferred == ("a",)
    # Still on the node but untagged: it now shows as a foreign EIP, which serves it; no taint.
    foreign = plan(SpecView("ingress", "pool", "ingress"), [free], [dataclasses.replace(a, foreign_eip=True)],
                   {"eipalloc-9": Claim(node="a")})
    assert not foreign.release[0].retaint
    # A disabled spec taints nothing.
    off = plan(SpecView("ingress", "pool", "ingress", enabled=False), [free], [a], {"eipalloc-9": Claim(node="a")})
    assert not off.release[0].retaint


def test_pool_low_alerts_once_per_episode_when_free_after_the_pass_falls_below_min_free() -> None:
    headroom = dataclasses.replace(SPEC, min_free=2)
    a = node("a", 1)
    # Three EIPs, one goes to "a": two free after the pass, as many as the headroom asks: no alert.
    enough = plan(headroom, [eip(1), eip(2), eip(3)], [a], {})
    assert len(enough.assign) == 1 and alert_key(Alert.POOL_LOW) not in enough.alerts
    # Two EIPs: one free after the pass, below minFree 2: one note, with the figures.
    low = plan(headroom, [eip(1), eip(2)], [a], {})
    assert [n.kind for n in low.notes] == ["pool_low"] and len(low.assign) == 1
    assert "1 free of 2 in the pool, below its headroom minFree 2" in low.notes[0].reason
    # Still low on the next pass: the alert holds, no new note; capacity back: it ends.
    again = plan(dataclasses.replace(headroom, active_alerts=low.alerts), [eip(1, on=a), eip(2)], [a],
                 {"eipalloc-1": Claim("a")})
    assert not again.notes and alert_key(Alert.POOL_LOW) in again.alerts
    back = plan(dataclasses.replace(headroom, active_alerts=low.alerts), [eip(1, on=a), eip(2), eip(3)], [a],
                {"eipalloc-1": Claim("a")})
    assert alert_key(Alert.POOL_LOW) not in back.alerts


def test_pool_low_needs_a_headroom_and_an_enabled_spec() -> None:
    a = node("a", 1)
    assert alert_key(Alert.POOL_LOW) not in plan(SPEC, [eip(1)], [a], {}).alerts  # minFree 0: never low
    off = dataclasses.replace(SPEC, min_free=5, enabled=False)
    assert alert_key(Alert.POOL_LOW) not in plan(off, [eip(1)], [a], {}).alerts  # draining: nothing to keep


def test_egress_not_via_eip_alerts_for_a_nat_routed_node_and_never_holds_its_eip_back() -> None:
    nat = node("nat", 1, egress_via="nat", egress_text="egress leaves through nat-1 (198.51.100.7)")
    public = node("public", 2, egress_via="internet-gateway")
    unknown = node("unknown", 3)
    result = plan(SPEC, [eip(1), eip(2), eip(3)], [nat, public, unknown], {})
    assert {a.node for a in result.assign} == {"nat", "public", "unknown"}  # every node still gets its EIP
    egress = [n for n in result.notes if n.kind == "egress_not_via_eip"]
    assert [(n.node, n.key) for n in egress] == [("nat", alert_key(Alert.EGRESS_NOT_VIA_EIP, "nat"))]
    assert "nat-1 (198.51.100.7)" in egress[0].reason
    # A node that holds its EIP keeps the alert while its route stays; a gone node does not.
    held = plan(dataclasses.replace(SPEC, active_alerts=result.alerts),
                [eip(1, on=dataclasses.replace(nat, startup_tainted=False))],
                [dataclasses.replace(nat, startup_tainted=False)], {"eipalloc-1": Claim("nat")})
    assert alert_key(Alert.EGRESS_NOT_VIA_EIP, "nat") in held.alerts and not held.notes
    no_route = node("dark", 4, egress_via="none", in_cluster=False, instance_state="terminated")
    assert not plan(SPEC, [], [no_route], {}).alerts
