"""The Kubernetes adapter against the API emulator, over HTTP, through a real kubeconfig."""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path

import pytest

from pools import services
from pools.models import Event, LaunchSpec
from pools.specfile import parse_launch_spec
from sandbox.kube_emulator import KubeEmulator
from sandbox.ports import free_port
from tests.fixtures.polling import eventually
from tests.fixtures.world import LABELS, World
from workers import executor
from workers import kube as kube_module
from workers.executor import KUBECONFIG_ALERT
from workers.kube import (
    ALLOCATION_ANNOTATION,
    EIP_LABEL,
    Conflict,
    Expired,
    Kube,
    KubeconfigError,
    KubeNode,
    NotFound,
    Permanent,
    Replaced,
    Transient,
    is_daemonset_pod,
    is_mirror_pod,
    is_terminal,
    is_workload_pod,
)

PENDING = {"key": "eipdash.io/eip-pending", "value": "true", "effect": "NoSchedule"}
SPEC = {"eipdash.io/pool": "web"}


@pytest.fixture
def kube(kubeconfig_path: Path) -> Kube:
    return Kube(config_file=str(kubeconfig_path), request_timeout=5)


def test_resolves_kubeconfig_from_environment(kube_env: Path, make_node) -> None:
    make_node("n1", "i-0001")
    assert [n.name for n in Kube().list_all_nodes()] == ["n1"]


def test_list_nodes_by_labels_parses_provider_id(kube: Kube, make_node) -> None:
    make_node("web-1", "i-0aaa", az="eu-west-1b", labels=SPEC, taints=[PENDING])
    make_node("web-2", "i-0bbb", labels={**SPEC, "other": "x"})
    make_node("batch-1", "i-0ccc", labels={"eipdash.io/pool": "batch"})

    nodes = {n.name: n for n in kube.list_nodes(SPEC)}

    assert set(nodes) == {"web-1", "web-2"}
    web1 = nodes["web-1"]
    assert (web1.instance_id, web1.az, web1.provider_id) == ("i-0aaa", "eu-west-1b", "aws:///eu-west-1b/i-0aaa")
    assert web1.has_taint("eipdash.io/eip-pending") and not web1.draining
    assert web1.resource_version and web1.labels["eipdash.io/pool"] == "web"
    assert {n.name for n in kube.list_nodes({"eipdash.io/pool": "web", "other": "x"})} == {"web-2"}


def test_list_nodes_builds_an_unchanged_node_once_and_sees_every_change(kube: Kube, make_node,
                                                                       kube_emulator: KubeEmulator) -> None:
    """A node listed again with the same resourceVersion is the same KubeNode (not built again); a label, a taint
    or a cordon, made by anyone, gives it a new resourceVersion and a new KubeNode that shows it."""
    make_node("web-1", "i-0aaa", labels=SPEC, taints=[PENDING])
    make_node("web-2", "i-0bbb", labels=SPEC)
    first = {n.name: n for n in kube.list_nodes(SPEC)}
    again = {n.name: n for n in kube.list_nodes(SPEC)}
    assert again["web-1"] is first["web-1"] and again["web-2"] is first["web-2"]

    kube_emulator.patch("nodes", "web-1", {"metadata": {"labels": {"team": "edge"}}})
    kube_emulator.patch("nodes", "web-2", {"spec": {"unschedulable": True, "taints": []}})
    changed = {n.name: n for n in kube.list_nodes(SPEC)}
    assert changed["web-1"] is not first["web-1"] and changed["web-1"].labels["team"] == "edge"
    assert changed["web-2"].unschedulable and changed["web-2"].observed != first["web-2"].observed


def test_fargate_and_foreign_provider_ids_have_no_instance(kube: Kube, kube_emulator: KubeEmulator) -> None:
    for name, provider_id in [("fargate-ip-10-0-0-1", "aws:///us-east-1a/fa-0123/fargate-ip-10-0-0-1"),
                              ("kind-1", "kind://docker/kind/kind-1"), ("odd", "aws:///us-east-1a/vm-1")]:
        kube_emulator.create("nodes", {"metadata": {"name": name}, "spec": {"providerID": provider_id}})
    assert {n.name: n.instance_id for n in kube.list_all_nodes()} == {
        "fargate-ip-10-0-0-1": None, "kind-1": None, "odd": None}


def counted_pages(kube_emulator: KubeEmulator, *, honour_limit: bool = False) -> list[tuple[int, str]]:
    """(items, resourceVersion asked) of every list page the emulator serves from now on (until the test
    ends). honour_limit: page even a resourceVersion="0" list, as a server listing from a cache snapshot may."""
    pages: list[tuple[int, str]] = []
    real_list = kube_emulator.list_page

    def counting_list(*args, **kwargs):
        asked = args[6] if len(args) > 6 else kwargs.get("resource_version", "")
        if honour_limit and asked == "0":
            args = (*args[:6], "")
        page = real_list(*args, **kwargs)
        pages.append((len(page["items"]), asked))
        return page

    kube_emulator.list_page = counting_list  # type: ignore[method-assign]
    return pages


@pytest.fixture
def restore_emulator(kube_emulator: KubeEmulator):
    yield kube_emulator
    kube_emulator.__dict__.pop("list_page", None)


def test_list_nodes_is_served_from_the_watch_cache_in_one_page(kube: Kube, make_node,
                                                               restore_emulator: KubeEmulator) -> None:
    for i in range(23):
        make_node(f"node-{i:02d}", f"i-{i:04x}", labels=SPEC)
    make_node("elsewhere", "i-ffff")
    pages = counted_pages(restore_emulator)
    nodes = kube.list_nodes(SPEC, page_size=5)
    assert sorted(n.name for n in nodes) == [f"node-{i:02d}" for i in range(23)]
    # resourceVersion="0": the API server answers from its watch cache and ignores the limit.
    assert pages == [(23, "0")]


def test_list_nodes_follows_pagination_without_resending_the_version(kube: Kube, make_node,
                                                                     restore_emulator: KubeEmulator) -> None:
    for i in range(23):
        make_node(f"node-{i:02d}", f"i-{i:04x}", labels=SPEC)
    pages = counted_pages(restore_emulator, honour_limit=True)
    nodes, version = kube.list_nodes_versioned(SPEC, page_size=5)
    assert sorted(n.name for n in nodes) == [f"node-{i:02d}" for i in range(23)]
    # The continue token carries the list's version: the server refuses it together with resourceVersion.
    assert pages == [(5, "0"), (5, ""), (5, ""), (5, ""), (3, "")]
    assert version == restore_emulator.list_page("nodes")["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"spec": {"unschedulable": True}}, "cordoned"),
        ({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}},
         "cluster-autoscaler"),
        # The autoscaler cordons too: the more telling reason wins.
        ({"spec": {"unschedulable": True, "taints": [{"key": "ToBeDeletedByClusterAutoscaler",
                                                      "effect": "NoSchedule"}]}}, "cluster-autoscaler"),
        ({"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}}, "karpenter"),
        ({"spec": {"taints": [{"key": "karpenter.sh/disruption", "value": "disrupting",
                               "effect": "NoSchedule"}]}}, "karpenter"),
        ({"metadata": {"finalizers": ["karpenter.sh/termination"]}}, ""),
        ({"spec": {"taints": [PENDING]}}, ""),
    ],
)
def test_draining(kube: Kube, make_node, kube_emulator: KubeEmulator, change, expected) -> None:
    make_node("n1", "i-0001")
    kube_emulator.patch("nodes", "n1", change)
    node = kube.get_node("n1")
    assert (node.drain_reason, node.draining) == (expected, bool(expected))


def test_deleting_node_with_finalizer_is_draining(kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    make_node("n1", "i-0001")
    kube_emulator.patch("nodes", "n1", {"metadata": {"finalizers": ["karpenter.sh/termination"]}})
    kube_emulator.delete("nodes", "n1")
    node = kube.get_node("n1")
    assert node.deleting and node.draining and node.drain_reason == "deleting"


def _pod(phase: str = "Running", *, owner: str = "", mirror: bool = False) -> dict[str, object]:
    meta: dict[str, object] = {"name": "p", "namespace": "default"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "apiVersion": "apps/v1", "uid": "u"}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    return {"metadata": meta, "status": {"phase": phase}}


def test_pod_predicates_name_each_rule() -> None:
    assert is_terminal(_pod("Succeeded")) and is_terminal(_pod("Failed")) and not is_terminal(_pod("Pending"))
    assert is_daemonset_pod(_pod(owner="DaemonSet")) and not is_daemonset_pod(_pod(owner="ReplicaSet"))
    assert is_mirror_pod(_pod(mirror=True)) and not is_mirror_pod(_pod())
    assert is_workload_pod(_pod()) and is_workload_pod(_pod("Pending", owner="ReplicaSet"))
    assert is_workload_pod({})  # a pod without status is not known to be finished: it counts (I2)
    for not_workload in (_pod("Failed"), _pod(owner="DaemonSet"), _pod(mirror=True)):
        assert not is_workload_pod(not_workload)


def test_workload_pod_count_excludes_daemonsets_mirrors_and_finished(kube: Kube, make_node, make_pod) -> None:
    make_node("n1", "i-0001")
    make_node("n2", "i-0002")
    make_pod("web", "n1")
    make_pod("worker", "n1", namespace="jobs", phase="Running")
    make_pod("fluent-bit", "n1", namespace="kube-system", daemonset=True, phase="Running")
    make_pod("kube-proxy-n1", "n1", namespace="kube-system", mirror=True, phase="Running")
    make_pod("done", "n1", phase="Succeeded")
    make_pod("crashed", "n1", phase="Failed")
    make_pod("elsewhere", "n2", phase="Running")
    make_pod("unscheduled", None)

    assert kube.workload_pod_count("n1") == 2
    assert kube.workload_pod_count("n2") == 1
    assert kube.workload_pod_count("gone") == 0


def test_workload_pod_count_pages(kube: Kube, make_node, make_pod, monkeypatch) -> None:
    make_node("n1", "i-0001")
    for i in range(7):
        make_pod(f"p{i}", "n1")
    original = kube._paged
    monkeypatch.setattr(kube, "_paged", lambda fn, _size, **kw: original(fn, 3, **kw))
    assert kube.workload_pod_count("n1") == 7


def test_lift_startup_taint_keeps_other_taints(kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    other = {"key": "dedicated", "value": "web", "effect": "NoSchedule"}
    make_node("n1", "i-0001", taints=[PENDING, other, {**PENDING, "effect": "NoExecute"}])

    assert kube.lift_startup_taint("n1", PENDING["key"]) is True
    assert kube_emulator.get("nodes", "n1")["spec"]["taints"] == [other]
    assert kube.lift_startup_taint("n1", PENDING["key"]) is False


def test_lift_last_taint_leaves_none(kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    make_node("n1", "i-0001", taints=[PENDING])
    assert kube.lift_startup_taint("n1", PENDING["key"]) is True
    assert not kube_emulator.get("nodes", "n1")["spec"].get("taints")
    assert not kube.get_node("n1").has_taint(PENDING["key"])


def test_lift_startup_taint_missing_node(kube: Kube) -> None:
    with pytest.raises(NotFound):
        kube.lift_startup_taint("ghost", PENDING["key"])


def test_lift_startup_taint_retries_when_another_writer_adds_a_taint(
        kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    """Between our read and our patch, another controller adds a taint. Our write carries the
    resourceVersion we read, so it is refused (409) instead of dropping that taint; we re-read and retry."""
    make_node("n1", "i-0001", taints=[PENDING])
    theirs = {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}
    real_read = kube._read_node
    reads = []

    def read_then_race(name: str):
        node = real_read(name)
        reads.append(node["metadata"]["resourceVersion"])
        if len(reads) == 1:
            kube_emulator.patch("nodes", name, {"spec": {"taints": [PENDING, theirs]}})
        return node

    monkeypatch.setattr(kube, "_read_node", read_then_race)
    assert kube.lift_startup_taint("n1", PENDING["key"]) is True

    assert kube_emulator.get("nodes", "n1")["spec"]["taints"] == [theirs]
    assert len(reads) == 2 and reads[0] != reads[1]


def test_lift_startup_taint_gives_up_after_bounded_conflicts(
        kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    make_node("n1", "i-0001", taints=[PENDING])
    real_read = kube._read_node
    reads = []

    def read_then_always_race(name: str):
        node = real_read(name)
        reads.append(1)
        kube_emulator.patch("nodes", name, {"metadata": {"labels": {"churn": str(len(reads))}}})
        return node

    monkeypatch.setattr(kube, "_read_node", read_then_always_race)
    with pytest.raises(Conflict):
        kube.lift_startup_taint("n1", PENDING["key"])
    assert len(reads) == kube_module.TAINT_RETRIES
    assert kube_emulator.get("nodes", "n1")["spec"]["taints"] == [PENDING]


def test_eip_marks_set_and_cleared(kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    make_node("n1", "i-0001", labels={"keep": "me"})
    kube_emulator.patch("nodes", "n1", {"metadata": {"annotations": {"other": "a"}}})

    kube.set_eip_marks("n1", public_ip="203.0.113.7", allocation_id="eipalloc-0abc")
    node = kube.get_node("n1")
    assert node.labels[EIP_LABEL] == "203.0.113.7" and node.labels["keep"] == "me"
    assert node.annotations == {"other": "a", ALLOCATION_ANNOTATION: "eipalloc-0abc"}

    kube.clear_eip_marks("n1")
    stored = kube_emulator.get("nodes", "n1")["metadata"]
    assert EIP_LABEL not in stored["labels"] and stored["labels"]["keep"] == "me"
    assert stored["annotations"] == {"other": "a"}
    kube.clear_eip_marks("ghost")  # a node that is gone needs no clearing
    with pytest.raises(NotFound):
        kube.set_eip_marks("ghost", public_ip="203.0.113.7", allocation_id="eipalloc-0abc")


def test_writes_for_one_node_refuse_its_successor_under_the_same_name(
        kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    """EKS reuses ip-… node names: a write meant for the node on i-old must not land on the node that
    now has its name on i-new (lifting that one's startup taint would make it schedulable without an EIP)."""
    make_node("ip-10-0-0-9", "i-old", taints=[PENDING])
    kube_emulator.delete("nodes", "ip-10-0-0-9")
    make_node("ip-10-0-0-9", "i-new", labels={EIP_LABEL: "198.51.100.9"}, taints=[PENDING])

    with pytest.raises(Replaced):
        kube.lift_startup_taint("ip-10-0-0-9", PENDING["key"], instance_id="i-old")
    with pytest.raises(Replaced):
        kube.set_eip_marks("ip-10-0-0-9", public_ip="203.0.113.7", allocation_id="eipalloc-0abc", instance_id="i-old")
    kube.clear_eip_marks("ip-10-0-0-9", instance_id="i-old")  # the old node's marks went with it
    stored = kube_emulator.get("nodes", "ip-10-0-0-9")
    assert stored["spec"]["taints"] == [PENDING] and stored["metadata"]["labels"][EIP_LABEL] == "198.51.100.9"
    assert ALLOCATION_ANNOTATION not in (stored["metadata"].get("annotations") or {})
    assert issubclass(Replaced, NotFound)  # a replaced node is gone for whoever meant the old one

    # For the instance that is there now, the same writes go through.
    kube.set_eip_marks("ip-10-0-0-9", public_ip="203.0.113.7", allocation_id="eipalloc-0abc", instance_id="i-new")
    assert kube.lift_startup_taint("ip-10-0-0-9", PENDING["key"], instance_id="i-new") is True
    node = kube.get_node("ip-10-0-0-9")
    assert (node.taints, node.labels[EIP_LABEL], node.annotations[ALLOCATION_ANNOTATION]) == (
        (), "203.0.113.7", "eipalloc-0abc")
    kube.clear_eip_marks("ip-10-0-0-9", instance_id="i-new")
    assert EIP_LABEL not in kube.get_node("ip-10-0-0-9").labels


@pytest.mark.parametrize("write", ["lift", "marks"])
def test_a_node_replaced_between_the_read_and_the_write_is_refused(
        write: str, kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    """The read still shows i-old; the new node registers before the patch. The patch carries the read's
    resourceVersion, so it fails (409) instead of landing on the new node, and the re-read sees i-new."""
    make_node("ip-10-0-0-9", "i-old", taints=[PENDING])
    real_read = kube._read_node
    reads: list[str] = []

    def read_then_replace(name: str):
        node = real_read(name)
        reads.append(node["spec"]["providerID"])
        if len(reads) == 1:
            kube_emulator.delete("nodes", name)
            make_node(name, "i-new", taints=[PENDING])
        return node

    monkeypatch.setattr(kube, "_read_node", read_then_replace)
    with pytest.raises(Replaced):
        if write == "lift":
            kube.lift_startup_taint("ip-10-0-0-9", PENDING["key"], instance_id="i-old")
        else:
            kube.set_eip_marks("ip-10-0-0-9", public_ip="203.0.113.7", allocation_id="eipalloc-0abc",
                               instance_id="i-old")

    assert reads == ["aws:///us-east-1a/i-old", "aws:///us-east-1a/i-new"]
    stored = kube_emulator.get("nodes", "ip-10-0-0-9")
    assert stored["spec"]["taints"] == [PENDING] and EIP_LABEL not in (stored["metadata"].get("labels") or {})


def test_watch_nodes_reports_adds_changes_and_deletes(kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    make_node("old", "i-0001")
    seen: list[tuple[str, str, bool]] = []
    started = time.monotonic()

    def writer() -> None:
        eventually(lambda: seen, timeout=5, what="the watch is live", interval=0.01)
        make_node("new", "i-0002", taints=[PENDING])
        kube_emulator.patch("nodes", "new", {"spec": {"taints": None}})
        kube_emulator.delete("nodes", "old")

    thread = threading.Thread(target=writer)
    thread.start()
    versions = []
    for event in kube.watch_nodes(timeout_seconds=2):
        versions.append(int(event.resource_version))
        if event.node is not None:
            assert isinstance(event.node, KubeNode)
            seen.append((event.type, event.node.name, event.node.has_taint(PENDING["key"])))
    thread.join()

    assert seen == [("ADDED", "old", False), ("ADDED", "new", True), ("MODIFIED", "new", False),
                    ("DELETED", "old", False)]
    assert versions == sorted(versions)
    assert time.monotonic() - started < 6  # the server ended the stream at timeout_seconds


def test_watch_from_a_version_sees_only_later_changes_and_bookmarks_carry_the_version(
    kube: Kube, make_node, make_pod, kube_emulator: KubeEmulator,
) -> None:
    make_node("before", "i-0001")
    nodes, version = kube.list_nodes_versioned()
    assert [n.name for n in nodes] == ["before"]
    make_node("after", "i-0002")
    make_pod("p1", "after")  # not a node: only a bookmark can tell the watch that the version moved on
    kube_emulator.bookmark_seconds = 0.2
    try:
        events = list(kube.watch_nodes(resource_version=version, timeout_seconds=1))
    finally:
        kube_emulator.bookmark_seconds = 1.0
    assert [(e.type, e.node.name) for e in events if e.node] == [("ADDED", "after")]
    bookmarks = [e for e in events if e.type == "BOOKMARK"]
    assert bookmarks and bookmarks[-1] is events[-1]
    newest = kube_emulator.list_page("pods")["metadata"]["resourceVersion"]
    assert events[-1].resource_version == newest and int(newest) > int(events[0].resource_version)


def test_a_watch_from_a_compacted_version_is_expired(kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    make_node("n1", "i-0001")
    _, version = kube.list_nodes_versioned()
    make_node("n2", "i-0002")
    kube_emulator.compact()
    with pytest.raises(Expired):
        list(kube.watch_nodes(resource_version=version, timeout_seconds=1))


def test_errors_are_mapped(kube: Kube, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        kube.get_node("ghost")
    with pytest.raises(Permanent):  # 400: a selector the server cannot parse
        kube._paged(kube.core.list_node, 10, label_selector="a in (").__next__()
    # Nothing listens on this port: the emulator object only writes the kubeconfig.
    dead_config = KubeEmulator(port=free_port()).write_kubeconfig(tmp_path / "dead")
    with pytest.raises(Transient):
        Kube(config_file=str(dead_config), request_timeout=1).list_all_nodes()


def test_bad_kubeconfig_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(Permanent):
        Kube(config_file=str(tmp_path / "nope"))


def test_add_startup_taint_keeps_other_taints_and_is_idempotent(
        kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    other = {"key": "dedicated", "value": "web", "effect": "NoSchedule"}
    make_node("n1", "i-0001", taints=[other])
    assert kube.add_startup_taint("n1", PENDING["key"]) is True
    assert kube_emulator.get("nodes", "n1")["spec"]["taints"] == [other, PENDING]
    assert kube.add_startup_taint("n1", PENDING["key"]) is False
    make_node("n2", "i-0002")
    assert kube.add_startup_taint("n2", PENDING["key"]) is True
    assert kube.get_node("n2").has_taint(PENDING["key"])
    with pytest.raises(NotFound):
        kube.add_startup_taint("ghost", PENDING["key"])


def test_add_startup_taint_retries_when_another_writer_adds_a_taint(
        kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    """A taint another controller adds between our read and our patch survives: the precondition
    refuses our write (409), we re-read and add ours to theirs."""
    make_node("n1", "i-0001")
    theirs = {"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"}
    real_read = kube._read_node
    reads = []

    def read_then_race(name: str):
        node = real_read(name)
        reads.append(1)
        if len(reads) == 1:
            kube_emulator.patch("nodes", name, {"spec": {"taints": [theirs]}})
        return node

    monkeypatch.setattr(kube, "_read_node", read_then_race)
    assert kube.add_startup_taint("n1", PENDING["key"]) is True
    assert kube_emulator.get("nodes", "n1")["spec"]["taints"] == [theirs, PENDING]
    assert len(reads) == 2


def test_mark_ready_sets_the_marks_and_lifts_the_taint_in_one_read_and_one_patch(
        kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    theirs = {"key": "example.com/other", "effect": "NoSchedule"}
    make_node("n1", "i-0001", labels={"keep": "me"}, taints=[PENDING, theirs])
    calls: list[str] = []
    def counted(name: str):
        real = getattr(kube, name)

        def call(*args):
            calls.append(name)
            return real(*args)
        return call

    for name in ("_read_node", "_patch_node"):
        monkeypatch.setattr(kube, name, counted(name))

    assert kube.mark_ready("n1", public_ip="203.0.113.7", allocation_id="eipalloc-0abc",
                           taint_key=PENDING["key"], instance_id="i-0001") is True

    assert calls == ["_read_node", "_patch_node"]
    stored = kube_emulator.get("nodes", "n1")
    assert stored["spec"]["taints"] == [theirs]
    assert stored["metadata"]["labels"]["keep"] == "me" and stored["metadata"]["labels"][EIP_LABEL] == "203.0.113.7"
    assert stored["metadata"]["annotations"][ALLOCATION_ANNOTATION] == "eipalloc-0abc"
    # Marked and untainted already: nothing lifted, nothing written.
    calls.clear()
    assert kube.mark_ready("n1", public_ip="203.0.113.7", allocation_id="eipalloc-0abc",
                           taint_key=PENDING["key"], instance_id="i-0001") is False
    assert calls == ["_read_node"]


def test_mark_ready_on_an_untainted_node_sets_the_marks_and_lifts_nothing(
        kube: Kube, make_node, kube_emulator: KubeEmulator) -> None:
    make_node("n1", "i-0001")
    assert kube.mark_ready("n1", public_ip="203.0.113.7", allocation_id="eipalloc-0abc",
                           taint_key=PENDING["key"], instance_id="i-0001") is False
    assert kube.get_node("n1").labels[EIP_LABEL] == "203.0.113.7"
    with pytest.raises(NotFound):
        kube.mark_ready("ghost", public_ip="203.0.113.7", allocation_id="eipalloc-0abc", taint_key=PENDING["key"])


def test_mark_ready_refuses_a_node_replaced_between_the_read_and_the_write(
        kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    """The 409 of the read's resourceVersion, the re-read, then Replaced: the new node keeps its taint and
    gets no marks."""
    make_node("ip-10-0-0-9", "i-old", taints=[PENDING])
    real_read = kube._read_node
    reads: list[str] = []

    def read_then_replace(name: str):
        node = real_read(name)
        reads.append(node["spec"]["providerID"])
        if len(reads) == 1:
            kube_emulator.delete("nodes", name)
            make_node(name, "i-new", taints=[PENDING])
        return node

    monkeypatch.setattr(kube, "_read_node", read_then_replace)
    with pytest.raises(Replaced):
        kube.mark_ready("ip-10-0-0-9", public_ip="203.0.113.7", allocation_id="eipalloc-0abc",
                        taint_key=PENDING["key"], instance_id="i-old")
    assert reads == ["aws:///us-east-1a/i-old", "aws:///us-east-1a/i-new"]
    stored = kube_emulator.get("nodes", "ip-10-0-0-9")
    assert stored["spec"]["taints"] == [PENDING] and EIP_LABEL not in (stored["metadata"].get("labels") or {})
    assert ALLOCATION_ANNOTATION not in (stored["metadata"].get("annotations") or {})


def test_mark_ready_retries_when_another_writer_adds_a_taint(
        kube: Kube, make_node, kube_emulator: KubeEmulator, monkeypatch) -> None:
    make_node("n1", "i-0001", taints=[PENDING])
    theirs = {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}
    real_read = kube._read_node
    reads = []

    def read_then_race(name: str):
        node = real_read(name)
        reads.append(node["metadata"]["resourceVersion"])
        if len(reads) == 1:
            kube_emulator.patch("nodes", name, {"spec": {"taints": [PENDING, theirs]}})
        return node

    monkeypatch.setattr(kube, "_read_node", read_then_race)
    assert kube.mark_ready("n1", public_ip="203.0.113.7", allocation_id="eipalloc-0abc",
                           taint_key=PENDING["key"], instance_id="i-0001") is True
    stored = kube_emulator.get("nodes", "n1")
    assert stored["spec"]["taints"] == [theirs] and stored["metadata"]["labels"][EIP_LABEL] == "203.0.113.7"
    assert len(reads) == 2 and reads[0] != reads[1]


def test_the_client_pool_holds_a_connection_per_step_thread(kube: Kube, settings) -> None:
    assert kube.api_client.configuration.connection_pool_maxsize >= settings.EIPDASH_STEP_CONCURRENCY
    pool = kube.api_client.rest_client.pool_manager.connection_pool_kw
    assert pool["maxsize"] >= settings.EIPDASH_STEP_CONCURRENCY


def test_every_write_carries_its_fence_and_an_older_one_is_refused(kube: Kube, make_node,
                                                                    kube_emulator: KubeEmulator) -> None:
    """The fencing number of a pass goes into the node's fence annotation in the same conditional patch as the
    write; a pass of the same spec with an older number is refused by the node itself, whatever it read."""
    from workers.kube import Fence, Fenced, fence_map

    make_node("n1", "i-0001", taints=[PENDING])
    assert kube.add_startup_taint("n1", PENDING["key"], fence=Fence(7, 12)) is False  # already there: stamped
    assert fence_map(kube_emulator.get("nodes", "n1")) == {"7": 12}
    with pytest.raises(Fenced):
        kube.lift_startup_taint("n1", PENDING["key"], instance_id="i-0001", fence=Fence(7, 11))
    with pytest.raises(Fenced):
        kube.mark_ready("n1", public_ip="203.0.113.1", allocation_id="eipalloc-1", taint_key=PENDING["key"],
                        fence=Fence(7, 11))
    assert kube_emulator.get("nodes", "n1")["spec"]["taints"] == [PENDING]
    # Another spec's numbers are its own; a newer pass of this spec writes and moves the number on.
    assert kube.mark_ready("n1", public_ip="203.0.113.1", allocation_id="eipalloc-1", taint_key=PENDING["key"],
                           fence=Fence(7, 13)) is True
    kube.clear_eip_marks("n1", fence=Fence(9, 1))
    assert fence_map(kube_emulator.get("nodes", "n1")) == {"7": 13, "9": 1}
    assert not kube_emulator.get("nodes", "n1")["spec"].get("taints")


# ---- issue 19 item 7: a cluster's kubeconfig, as the workers load it


def exec_kubeconfig(emulator: KubeEmulator, path: Path, marker: Path) -> Path:
    """The emulator's kubeconfig with its user's token replaced by an exec plugin that leaves `marker` behind
    (and answers a token, so that a client that runs it works)."""
    config = json.loads(emulator.write_kubeconfig(path).read_text())
    credential = json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                             "status": {"token": "sandbox-token"}})
    config["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/bin/sh",
        "args": ["-c", f"touch {shlex.quote(str(marker))}; printf '%s' {shlex.quote(credential)}"]}}
    path.write_text(json.dumps(config))
    return path


def test_an_exec_plugin_is_refused_when_the_client_loads_unless_the_setting_allows_it(
    kube_emulator: KubeEmulator, make_node, tmp_path: Path, settings,
) -> None:
    make_node("n1", "i-0001")
    marker = tmp_path / "the-plugin-ran"
    path = exec_kubeconfig(kube_emulator, tmp_path / "eks", marker)
    with pytest.raises(KubeconfigError, match="runs a command for its credentials"):
        Kube(config_file=str(path))
    assert not marker.exists()
    settings.EIPDASH_KUBECONFIG_ALLOW_EXEC = True
    assert [n.name for n in Kube(config_file=str(path)).list_all_nodes()] == ["n1"]
    assert marker.exists()


def test_a_kubeconfig_that_breaks_is_seen_at_the_next_load_as_a_kube_error(
    kube_emulator: KubeEmulator, make_node, tmp_path: Path,
) -> None:
    """The client is shared for a few minutes, but not past a change of its file: a file that broke (or now
    holds an exec plugin) is seen at the next load, and every way it can be broken is a KubeError."""
    make_node("n1", "i-0001")
    path = kube_emulator.write_kubeconfig(tmp_path / "kubeconfig")
    assert [n.name for n in Kube(config_file=str(path)).list_all_nodes()] == ["n1"]
    good = path.read_text()
    for broken in ("clusters: [\n", "- a list\n", json.dumps({"current-context": "x", "contexts": [5]}),
                   json.dumps({**json.loads(good), "users": "u"})):
        path.write_text(broken)
        with pytest.raises(KubeconfigError):
            Kube(config_file=str(path))
    path.unlink()
    with pytest.raises(KubeconfigError, match="cannot be read"):
        Kube(config_file=str(path))
    path.write_text(good)
    assert [n.name for n in Kube(config_file=str(path)).list_all_nodes()] == ["n1"]


def test_a_pass_on_a_cluster_whose_kubeconfig_breaks_records_one_error_per_episode(
    world: World, tmp_path: Path,
) -> None:
    path = world.kube.write_kubeconfig(tmp_path / "edge")
    services.cluster_create(name="edge", region="us-east-1", kubeconfig=str(path))
    spec, _ = services.launch_spec_apply(data=parse_launch_spec({
        "name": "edge-web", "cluster": "edge", "labels": [{"key": k, "value": v} for k, v in LABELS.items()],
        "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}}}))
    world.eips(2)
    world.node("n1")
    assert not executor.reconcile_spec(spec.pk).errors
    assert world.eip_on("n1") is not None
    good = path.read_text()

    def errors() -> list[str]:
        return list(Event.objects.filter(kind=Event.Kind.ERROR).order_by("pk").values_list("reason", flat=True))

    path.write_text("clusters: [\n")
    for _ in range(3):
        report = executor.reconcile_spec(spec.pk)
        assert report.read_failed and "is not valid YAML" in report.errors[0]
    assert len(errors()) == 1 and "is not valid YAML at line 2" in errors()[0]
    assert LaunchSpec.objects.get(pk=spec.pk).active_alerts == [KUBECONFIG_ALERT]

    # It loads again: the episode ends, and the pass serves the cluster (a new node gets the second EIP).
    path.write_text(good)
    world.node("n2")
    assert not executor.reconcile_spec(spec.pk).errors
    assert world.eip_on("n2") is not None
    assert LaunchSpec.objects.get(pk=spec.pk).active_alerts == []
    assert len(errors()) == 1

    # Broken again, another way (an exec plugin appeared): a new episode, one more event, and no command ran.
    marker = tmp_path / "the-plugin-ran"
    exec_kubeconfig(world.kube, path, marker)
    for _ in range(3):
        assert executor.reconcile_spec(spec.pk).read_failed
    assert len(errors()) == 2 and "runs a command for its credentials" in errors()[1]
    assert not marker.exists()
