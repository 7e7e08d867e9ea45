"""The release decision on plain values (pools/release_rule.py), as the executor asks it."""

from __future__ import annotations

from pools.planner import IF_THERE_DISASSOCIATE, IF_THERE_KEEP, Release
from pools.release_rule import (
    Decision,
    FreshLook,
    Keep,
    RecordedClaim,
    after_look,
    after_pod_count,
    first_decision,
    look_before_release,
    needs_eni_owner,
    recount_pods,
)

CLAIM_A = RecordedClaim("a", "eni-a", "10.0.0.1")
ON_A = FreshLook("eipassoc-now", "eni-a", "10.0.0.1", "i-a")
ON_B = FreshLook("eipassoc-b", "eni-b", "10.0.0.2", "i-b")
FREE = FreshLook(None, None, None, None)


def release(node: str = "a", association_id: str | None = None, if_still_there: str = "", **kw: object) -> Release:
    return Release("eipalloc-1", "203.0.113.1", node, "drained", association_id=association_id,
                   if_still_there=if_still_there, **kw)


def test_no_look_without_a_record_or_when_the_reading_and_the_record_agree() -> None:
    assert not look_before_release(release(association_id="eipassoc-1"), None)
    assert not look_before_release(release(association_id="eipassoc-1"), CLAIM_A)  # on a, recorded on a
    assert not look_before_release(release(), CLAIM_A)  # free, and no re-read asked for


def test_a_reading_that_shows_the_eip_on_another_node_than_the_record_is_checked() -> None:
    r = release("b", association_id="eipassoc-old")
    assert look_before_release(r, CLAIM_A)
    assert after_look(r, CLAIM_A, ON_A, node_instance_id="i-b").keep is Keep.ON_RECORDED_NODE
    # Really on b now: the plan's disassociation from b stands.
    assert after_look(r, CLAIM_A, ON_B, node_instance_id="i-b") == Decision(association_id="eipassoc-old")


def test_a_stale_free_reading_keeps_a_busy_nodes_eip() -> None:
    r = release(if_still_there=IF_THERE_KEEP)
    assert look_before_release(r, CLAIM_A)
    assert after_look(r, CLAIM_A, ON_A, node_instance_id="i-a").keep is Keep.STALE_READING
    # Really free (or elsewhere): only the record closes.
    assert after_look(r, CLAIM_A, FREE, node_instance_id="i-a") == Decision()
    assert after_look(r, CLAIM_A, ON_B, node_instance_id="i-a") == Decision()
    assert after_look(r, CLAIM_A, None, node_instance_id="i-a") == Decision()


def test_a_going_nodes_eip_still_there_is_disassociated_as_aws_shows_it() -> None:
    r = release(if_still_there=IF_THERE_DISASSOCIATE)
    assert after_look(r, CLAIM_A, ON_A, node_instance_id="i-a") == Decision(association_id="eipassoc-now")


def test_an_eip_left_on_a_dead_instance_behind_a_reused_name_goes_back() -> None:
    r = release(if_still_there=IF_THERE_KEEP)
    on_old_instance = FreshLook("eipassoc-now", "eni-a", "10.0.0.1", None)  # no InstanceId: ask the ENI
    assert needs_eni_owner(r, CLAIM_A, on_old_instance, "i-new")
    assert not needs_eni_owner(r, CLAIM_A, ON_A, "i-new")  # the address names its instance
    decision = after_look(r, CLAIM_A, on_old_instance, node_instance_id="i-new", eni_owner="i-old")
    assert decision == Decision(association_id="eipassoc-now", replaced=True)
    assert after_look(r, CLAIM_A, on_old_instance, node_instance_id="i-new", eni_owner="i-new").keep is (
        Keep.STALE_READING)


def test_a_drained_node_keeps_its_eip_unless_its_pods_are_surely_zero() -> None:
    r = release(association_id="eipassoc-1", drained=True)
    decision = first_decision(r)
    assert recount_pods(r, decision)
    assert after_pod_count(decision, 0) == decision
    assert after_pod_count(decision, 2).keep is Keep.PODS
    assert after_pod_count(decision, None).keep is Keep.PODS  # not countable: kept (I2)
    assert not recount_pods(release(association_id="eipassoc-1"), decision)  # gone, not drained
    assert not recount_pods(r, Decision())  # nothing to disassociate
