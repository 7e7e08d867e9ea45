"""pools/drain.py: what holds each EIP of a draining spec back, in the planner's terms. Pure: plain values."""

from __future__ import annotations

import pytest

from pools.drain import DrainHold, drain_holds, hold_reason
from pools.planner import Claim, EipView, NodeView, SpecView, plan


def _node(name: str, **extra: object) -> NodeView:
    values: dict[str, object] = {"instance_id": f"i-{name}", "instance_state": "running", "eni_id": f"eni-{name}",
                                 "private_ip": f"10.0.0.{len(name)}"}
    values.update(extra)
    return NodeView(name=name, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("extra", "why", "until"), [
    ({}, "the node runs and is not draining: a node keeps its EIP while it runs",
     "once the node drains or its instance ends"),
    ({"draining": True, "workload_pods": 1}, "1 workload pod still runs", "once its 1 workload pod is gone"),
    ({"draining": True, "workload_pods": None}, "it drains; its workload pods are not counted yet",
     "once it has no workload pods left"),
    ({"instance_state": "stopping"}, "its instance is stopping: a stopped instance keeps its EIP, as in AWS",
     "once its instance is terminated or the node deleted"),
])
def test_hold_reason_says_the_nodes_side_of_the_release_rule(extra: dict[str, object], why: str, until: str) -> None:
    assert hold_reason(_node("a", **extra), Claim(node="a")) == (why, until)


def test_an_unconfirmed_claim_waits_for_aws_and_a_missing_node_for_a_pass() -> None:
    assert hold_reason(_node("a"), Claim(node="a", confirmed=False))[0] == "its association is not confirmed by AWS yet"
    assert hold_reason(None, Claim(node="a"))[0] == "its node is not in the last snapshot"


def test_drain_holds_lists_every_held_eip_in_ip_order_with_the_next_passs_releases() -> None:
    busy = _node("busy", draining=True, workload_pods=2)
    done = _node("done", draining=True, workload_pods=0, drain_reason="karpenter")
    quiet = _node("quiet")  # holds an EIP that AWS shows on it, without a record
    eips = [EipView("eipalloc-10", "203.0.113.10", "assoc-1", busy.eni_id, busy.private_ip),
            EipView("eipalloc-9", "203.0.113.9", "assoc-2", done.eni_id, done.private_ip),
            EipView("eipalloc-2", "203.0.113.2", "assoc-3", quiet.eni_id, quiet.private_ip),
            EipView("eipalloc-free", "203.0.113.50")]
    claims = {"eipalloc-10": Claim(node="busy"), "eipalloc-9": Claim(node="done")}
    nodes = [busy, done, quiet]
    planned = plan(SpecView("s", "pool", None, enabled=False), eips, nodes, claims)
    holds = drain_holds(planned, eips, nodes, claims)
    assert [(h.public_ip, h.node, h.next_pass) for h in holds] == [
        ("203.0.113.2", "quiet", False), ("203.0.113.9", "done", True), ("203.0.113.10", "busy", False)]
    assert holds[1].held == ("203.0.113.9 on done: released by the next pass "
                             "(drained (karpenter): no workload pods left)")
    assert holds[2].coming == "203.0.113.10 from busy once its 2 workload pods are gone"


def test_a_hold_without_a_public_ip_is_named_by_its_allocation() -> None:
    assert DrainHold("", "eipalloc-1", "a", "x", "once y").coming == "eipalloc-1 from a once y"
