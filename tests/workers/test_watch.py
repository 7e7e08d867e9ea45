"""The node watch: list once, watch from the list's resourceVersion, keep the version from events and
bookmarks, resume from it when a stream ends, list again only on 410 Gone; one stream per cluster.

Against the Kubernetes API emulator over HTTP; passes are "enqueued" into a list (the broker side is
covered by test_watch_outage.py and test_watch_backoff.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from pools import services
from pools.models import Cluster, LaunchSpec
from pools.specfile import parse_launch_spec
from sandbox.kube_emulator import KubeEmulator, node_manifest
from tests.fixtures.polling import eventually
from workers.kube import Kube
from workers.watch import NodeWatch, Spaced, watch_clusters

WEB = {"eipdash.io/pool": "web"}
API = {"eipdash.io/pool": "api"}


def watching(*args: Any, **kwargs: Any) -> None:
    """watch_clusters in a test's thread, which closes its own database connection when it ends (the watch
    command runs it in its main thread): left open, PostgreSQL cannot drop the test database at the end."""
    try:
        watch_clusters(*args, **kwargs)
    finally:
        connection.close()


def spec_in(cluster: str, name: str, labels: dict[str, str]) -> LaunchSpec:
    data = parse_launch_spec({"name": name, "labels": [{"key": k, "value": v} for k, v in labels.items()],
                              "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": name}},
                              "region": "us-east-1", "cluster": cluster})
    spec, _ = services.launch_spec_apply(data=data)
    return spec


def node(emulator: KubeEmulator, name: str, labels: dict[str, str], instance: str = "i-0001") -> None:
    emulator.create("nodes", node_manifest(name, instance, "us-east-1a", labels))


class Sent:
    """What the watch enqueued, as (node, event, spec id)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, int]] = []

    def __call__(self, name: str, event: str, spec_id: int) -> bool:
        self.items.append((name, event, spec_id))
        return True


@pytest.fixture
def web(db: None, kubeconfig_path: Path) -> LaunchSpec:
    Cluster.objects.create(name="one", region="us-east-1", kubeconfig=str(kubeconfig_path))
    return spec_in("one", "web", WEB)


@pytest.fixture
def node_watch(web: LaunchSpec, kubeconfig_path: Path) -> tuple[NodeWatch, Sent]:
    sent = Sent()
    kube = Kube(config_file=str(kubeconfig_path), request_timeout=5)
    return NodeWatch(web.cluster, kube, sent, round_seconds=1), sent


def test_the_first_list_sends_every_spec_with_a_node_and_the_watch_follows_from_its_version(
    node_watch: tuple[NodeWatch, Sent], kube_emulator: KubeEmulator, web: LaunchSpec,
) -> None:
    watch, sent = node_watch
    node(kube_emulator, "w1", WEB)
    node(kube_emulator, "other", {"eipdash.io/pool": "none"}, "i-0002")
    assert watch.round()
    assert watch.lists == 1 and sent.items == [("w1", "added", web.pk)]

    # A change between two rounds (no stream open): the next round resumes from the kept version and sees it.
    sent.items.clear()
    kube_emulator.patch("nodes", "w1", {"spec": {"unschedulable": True}})
    assert watch.round()
    assert watch.lists == 1, "a stream that ended is resumed, not listed again"
    assert sent.items == [("w1", "modified", web.pk)]


def test_bookmarks_advance_the_resource_version(node_watch: tuple[NodeWatch, Sent], kube_emulator: KubeEmulator,
                                                make_pod: Callable[..., object]) -> None:
    watch, sent = node_watch
    node(kube_emulator, "w1", WEB)
    assert watch.round()
    listed_at = int(watch.resource_version)
    make_pod("p1", "w1")  # not a node: no node event, only the version moves on
    kube_emulator.bookmark_seconds = 0.2
    try:
        assert watch.round()
    finally:
        kube_emulator.bookmark_seconds = 1.0
    newest = kube_emulator.list_page("pods")["metadata"]["resourceVersion"]
    assert int(watch.resource_version) > listed_at and watch.resource_version == newest
    assert watch.lists == 1


def test_a_410_lists_again_once_and_sends_only_the_specs_whose_nodes_changed(
    node_watch: tuple[NodeWatch, Sent], kube_emulator: KubeEmulator, kubeconfig_path: Path, web: LaunchSpec,
) -> None:
    api = spec_in("one", "api", API)
    node(kube_emulator, "w1", WEB)
    node(kube_emulator, "a1", API, "i-0002")
    watch, sent = node_watch
    assert watch.round()
    assert sorted(sent.items) == [("a1", "added", api.pk), ("w1", "added", web.pk)]
    sent.items.clear()

    # While no stream is open, a web node comes and the server compacts its history past our version.
    node(kube_emulator, "w2", WEB, "i-0003")
    kube_emulator.compact()
    assert watch.round()  # the watch answers 410: the version is dropped
    assert watch.resource_version == "" and watch.lists == 1
    assert watch.round()  # lists again, then watches from the new list's version
    assert watch.lists == 2
    assert sent.items == [("w2", "added", web.pk)], "the api spec's nodes did not change"
    assert watch.round() and watch.lists == 2


# ---- one stream per cluster


@pytest.fixture
def second_emulator() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


def test_each_cluster_has_its_own_stream_and_one_failing_does_not_stop_the_other(
    transactional_db: None, kube_emulator: KubeEmulator, second_emulator: KubeEmulator, tmp_path: Path,
) -> None:
    Cluster.objects.create(name="one", region="us-east-1",
                           kubeconfig=str(kube_emulator.write_kubeconfig(tmp_path / "one")))
    web = spec_in("one", "web", WEB)
    enqueued: list[int] = []
    lock = threading.Lock()

    def enqueue(spec_id: int) -> None:
        with lock:
            enqueued.append(spec_id)

    def sent(spec: LaunchSpec) -> bool:
        with lock:
            return spec.pk in enqueued

    stop = threading.Event()
    heartbeat = tmp_path / "heartbeat"
    runner = threading.Thread(target=watching, args=(enqueue,), daemon=True,
                              kwargs=dict(stop=stop, recheck_seconds=0.2, round_seconds=2, retry_seconds=0.2,
                                          min_interval=0.0, heartbeat_file=heartbeat))
    runner.start()
    try:
        node(kube_emulator, "w1", WEB)
        eventually(lambda: sent(web), timeout=20, what="cluster one's node enqueued its spec")

        # A second cluster added while the watch runs: it gets its own stream.
        Cluster.objects.create(name="two", region="us-east-1",
                               kubeconfig=str(second_emulator.write_kubeconfig(tmp_path / "two")))
        api = spec_in("two", "api", API)
        # The same node name in both clusters, each with its own cluster's labels.
        node(second_emulator, "w1", API)
        eventually(lambda: sent(api), timeout=20, what="cluster two's node enqueued its spec")
        with lock:
            enqueued.clear()

        # Cluster two's API server goes away: cluster one's watch goes on.
        second_emulator.stop()
        node(kube_emulator, "w2", WEB, "i-0002")
        eventually(lambda: sent(web), timeout=20, what="cluster one still enqueues with cluster two down")
        with lock:
            assert api.pk not in enqueued
        assert heartbeat.exists()
    finally:
        stop.set()
        runner.join(timeout=20)
    assert not runner.is_alive()


def test_a_cluster_pointed_at_another_api_server_is_watched_there_within_a_round(
    transactional_db: None, second_emulator: KubeEmulator, tmp_path: Path,
) -> None:
    # Its own old server (never the session's shared emulator): the test stops it.
    old_server = KubeEmulator().start()
    cluster = Cluster.objects.create(name="one", region="us-east-1",
                                     kubeconfig=str(old_server.write_kubeconfig(tmp_path / "old")))
    web = spec_in("one", "web", WEB)
    enqueued: list[int] = []
    stop = threading.Event()
    runner = threading.Thread(target=watching, args=(enqueued.append,), daemon=True,
                              kwargs=dict(stop=stop, recheck_seconds=0.2, round_seconds=1, retry_seconds=0.2,
                                          min_interval=0.0))
    runner.start()
    try:
        node(old_server, "w1", WEB)
        eventually(lambda: web.pk in enqueued, timeout=20, what="the first API server's node enqueued its spec")
        # The operator moves the cluster to its new API server (a new kubeconfig): the watch follows.
        Cluster.objects.filter(pk=cluster.pk).update(
            kubeconfig=str(second_emulator.write_kubeconfig(tmp_path / "new")))
        old_server.stop()  # the old server is gone; only the new one can report the next node
        enqueued.clear()
        node(second_emulator, "w9", WEB, "i-0009")
        eventually(lambda: web.pk in enqueued, timeout=20, what="the new API server's node enqueued its spec")
    finally:
        stop.set()
        runner.join(timeout=20)
        old_server.stop()
    assert not runner.is_alive()


def test_a_cluster_whose_kubeconfig_cannot_load_is_logged_once_and_watched_once_it_loads(
    transactional_db: None, kube_emulator: KubeEmulator, second_emulator: KubeEmulator, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19 item 7: a broken kubeconfig is one warning for the episode (then quiet retries with backoff),
    never a traceback per retry; the other cluster's watch goes on, and the cluster is watched once its file
    loads again."""
    caplog.set_level(logging.DEBUG, logger="workers.watch")
    Cluster.objects.create(name="one", region="us-east-1",
                           kubeconfig=str(kube_emulator.write_kubeconfig(tmp_path / "one")))
    web = spec_in("one", "web", WEB)
    broken = tmp_path / "two"
    broken.write_text("clusters: [\n")
    Cluster.objects.create(name="two", region="us-east-1", kubeconfig=str(broken))
    api = spec_in("two", "api", API)
    enqueued: list[int] = []
    stop = threading.Event()
    runner = threading.Thread(target=watching, args=(enqueued.append,), daemon=True,
                              kwargs=dict(stop=stop, recheck_seconds=0.2, round_seconds=1, retry_seconds=0.2,
                                          min_interval=0.0))

    def about_two() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "cluster two" in r.getMessage()]

    runner.start()
    try:
        node(kube_emulator, "w1", WEB)
        eventually(lambda: web.pk in enqueued, timeout=20, what="cluster one is watched")
        eventually(lambda: len(about_two()) >= 4, timeout=20, what="cluster two's kubeconfig was tried 4 times")
        loud = [r for r in about_two() if r.levelno >= logging.WARNING]
        assert len(loud) == 1 and "is not valid YAML" in loud[0].getMessage(), [r.getMessage() for r in loud]
        assert not any(r.exc_info for r in caplog.records), "no traceback"

        enqueued.clear()
        node(kube_emulator, "w2", WEB, "i-0002")
        eventually(lambda: web.pk in enqueued, timeout=20, what="cluster one goes on")
        second_emulator.write_kubeconfig(broken)
        node(second_emulator, "a1", API, "i-0003")
        eventually(lambda: api.pk in enqueued, timeout=30, what="cluster two is watched once its kubeconfig loads")
        assert any("loads again" in r.getMessage() for r in about_two())
    finally:
        stop.set()
        runner.join(timeout=20)
    assert not runner.is_alive()


def test_a_node_added_within_a_second_of_another_gets_its_own_pass_when_the_second_ends(
    transactional_db: None, kube_emulator: KubeEmulator, tmp_path: Path,
) -> None:
    """One pass per spec per `min_interval`, but no change left without one: the second node's event came
    inside the interval, so its pass is sent when the interval ends (it was dropped, and that node waited for
    the next beat tick)."""
    Cluster.objects.create(name="one", region="us-east-1",
                           kubeconfig=str(kube_emulator.write_kubeconfig(tmp_path / "one")))
    web = spec_in("one", "web", WEB)
    enqueued: list[tuple[int, float]] = []
    stop = threading.Event()

    def enqueue(spec_id: int) -> None:
        enqueued.append((spec_id, time.monotonic()))

    runner = threading.Thread(target=watching, args=(enqueue,), daemon=True,
                              kwargs=dict(stop=stop, recheck_seconds=0.2, round_seconds=5, retry_seconds=0.2,
                                          min_interval=1.0))
    runner.start()
    try:
        node(kube_emulator, "w1", WEB)
        eventually(lambda: len(enqueued) == 1, timeout=20, what="the first node's pass")
        node(kube_emulator, "w2", WEB, "i-0002")  # well within the second
        node(kube_emulator, "w3", WEB, "i-0003")
        eventually(lambda: len(enqueued) >= 2, timeout=20, what="a pass for the nodes of the same second")
        assert [spec for spec, _ in enqueued] == [web.pk, web.pk]  # one for both
        assert enqueued[1][1] - enqueued[0][1] >= 1.0
    finally:
        stop.set()
        runner.join(timeout=20)
    assert not runner.is_alive()


def test_spaced_puts_a_pass_off_to_the_end_of_the_interval_and_sends_none_after_cancel() -> None:
    sent: list[float] = []
    spaced = Spaced(lambda spec_id: sent.append(time.monotonic()) is None, 0.3)
    assert spaced.send(1, "node a added") and len(sent) == 1
    assert spaced.send(1, "node b added") and spaced.send(1, "node c added") and len(sent) == 1
    eventually(lambda: len(sent) == 2, timeout=10, what="the pass put off")
    assert sent[1] - sent[0] >= 0.3
    # The pass put off does not start an interval (it serves echoes of the last pass's own writes): the next
    # change, a node registering, is sent at once.
    assert spaced.send(1, "node d added") and len(sent) == 3
    assert spaced.send(1, "node e modified") and len(sent) == 3  # inside d's interval: put off...
    timer = spaced._timers[1]
    spaced.cancel()  # ...and the watch ends: never sent
    timer.join(timeout=10)
    assert not timer.is_alive() and len(sent) == 3
    assert spaced.send(2, "node f added") and len(sent) == 4  # another spec: its own interval
    assert not spaced._timers
