"""The node watch rides out a Redis outage: a real watch process, a real embedded Redis that is stopped
and started again on the same port, the Kubernetes API emulator and the test database."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest
import redis

from pools import services
from pools.specfile import parse_launch_spec
from sandbox.embedded_redis import EmbeddedRedis
from sandbox.kube_emulator import KubeEmulator, node_manifest
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import LABELS

pytestmark = pytest.mark.e2e

TASK = "workers.tasks.reconcile_spec"


def queued_passes(url: str) -> list[int]:
    """The spec ids of the reconcile_spec messages waiting in Celery's default queue (never consumed)."""
    spec_ids = []
    for raw in redis.Redis.from_url(url).lrange("celery", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == TASK:
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            spec_ids.append(int(args[0]))
    return spec_ids


def node(kube: KubeEmulator, name: str) -> None:
    kube.create("nodes", node_manifest(name, f"i-{name}", "us-east-1a", LABELS))


def changed(kube: KubeEmulator, name: str) -> bool:
    """Change the node (a new annotation value each call). The watch enqueues a spec at most once a second,
    so a test that waits for the watch's reaction keeps changing the node until it comes."""
    kube.patch("nodes", name, {"metadata": {"annotations": {"test/changed": str(time.monotonic())}}})
    return True


def test_the_watch_survives_a_redis_outage_and_enqueues_again(
    kube_emulator: KubeEmulator, kube_env: Path, transactional_db: None, tmp_path: Path,
) -> None:
    spec, _ = services.launch_spec_apply(data=parse_launch_spec({
        "name": "ingress", "labels": [{"key": k, "value": v} for k, v in LABELS.items()],
        "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}},
        "region": "us-east-1",
    }))
    server = EmbeddedRedis().start()
    port = server.port
    stack = Stack(server.url, tmp_path)
    heartbeat = tmp_path / "watch-heartbeat"
    try:
        watch = stack.start("watch", sys.executable, "manage.py", "watch_nodes", "--stop-after", "120",
                            "--max-backoff", "1", "--heartbeat-file", str(heartbeat))
        eventually(lambda: "watching the nodes" in stack.logs(), timeout=30, stack=stack, what="the watch started")

        node(kube_emulator, "before")
        eventually(lambda: spec.pk in queued_passes(server.url), timeout=20, stack=stack,
                   what="a pass enqueued while Redis is up")

        # The outage: Redis goes away while nodes keep changing.
        server.stop()
        node(kube_emulator, "during")
        eventually(lambda: changed(kube_emulator, "during") and "broker unreachable" in stack.logs(),
                   timeout=20, stack=stack, what="the watch noticed the outage")
        beat_during = heartbeat.stat().st_mtime_ns
        eventually(lambda: heartbeat.stat().st_mtime_ns > beat_during, timeout=20, stack=stack,
                   what="the heartbeat goes on during the outage")
        assert watch.poll() is None, stack.logs()

        # Redis is back (empty: no persistence) on the same port: the pass of the outage is sent.
        server = EmbeddedRedis(port).start()
        eventually(lambda: spec.pk in queued_passes(server.url), timeout=30, stack=stack,
                   what="the pass held during the outage was enqueued")
        eventually(lambda: "broker reachable again" in stack.logs(), timeout=10, stack=stack,
                   what="the end of the outage is logged")
        assert stack.logs().count("broker unreachable") == 1, "one warning per outage, not one per retry"

        # And the watch is live again: a new node change enqueues a new pass.
        redis.Redis.from_url(server.url).delete("celery")
        node(kube_emulator, "after")
        eventually(lambda: changed(kube_emulator, "after") and spec.pk in queued_passes(server.url),
                   timeout=20, stack=stack, what="a node change after the outage enqueued a pass")
        stack.assert_alive()
    finally:
        stack.stop()
        server.stop()
