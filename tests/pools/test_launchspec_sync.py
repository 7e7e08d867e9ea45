"""`manage.py launchspec apply -f DIR/` (GitOps): a folder is the whole desired state, applied all or nothing;
`--prune` disables or deletes the specs it does not name; `--diff` says what would change, for CI."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from pools import services
from pools.models import Assignment, Cluster, ElasticIP, LaunchSpec, Node, UnmanagedAddress

pytestmark = pytest.mark.django_db


def document(name: str, *, tag_value: str = "v", **extra: Any) -> dict[str, Any]:
    return {
        "launchSpec": {
            "name": name,
            "labels": [{"key": "eipdash.io/pool", "value": name}],
            "elasticIpPool": {"tagSelector": {"tagKey": "pool", "tagValue": tag_value}},
            **extra,
        }
    }


def folder(tmp_path: Path, files: dict[str, Any]) -> Path:
    path = tmp_path / "specs"
    path.mkdir(exist_ok=True)
    for old in path.glob("*"):
        old.unlink()
    for name, data in files.items():
        target = path / name
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


SCOPE_DEFAULT = "prune scope: cluster default (the clusters the input names); other clusters' specs are left alone\n"


def run(path: Path, *flags: str) -> str:
    out = StringIO()
    call_command("launchspec", "apply", "-f", str(path), *flags, stdout=out)
    return out.getvalue()


def exit_code(path: Path, *flags: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("launchspec", "apply", "-f", str(path), *flags, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def snapshot() -> list[Any]:
    return list(LaunchSpec.objects.order_by("name").values("name", "labels", "tag_key", "tag_value", "enabled",
                                                           "cluster_id", "updated_at"))


def hold_eip(spec_name: str) -> Assignment:
    """An open claim of `spec_name` on one node: the spec holds an EIP."""
    spec = LaunchSpec.objects.get(name=spec_name)
    now = timezone.now()
    count = Assignment.objects.count()
    eip = ElasticIP.objects.create(allocation_id=f"eipalloc-{count}", region=spec.cluster.region,
                                   public_ip=f"203.0.113.{count + 1}", last_seen_at=now)
    node = Node.objects.create(cluster=spec.cluster, name=f"node-{count}", instance_id=f"i-{count}",
                               launch_spec=spec, first_seen_at=now, last_seen_at=now, eni_id=f"eni-{count}")
    return services.assignment_open(eip=eip, node=node, spec=spec, actor="test", confirmed=True)


def test_folder_apply_creates_every_spec_in_one_run(tmp_path: Path) -> None:
    path = folder(tmp_path, {"b-web.json": document("web"), "a-api.json": document("api"), "notes.txt": "not json"})
    out = run(path)
    assert "+ spec api" in out and "+ spec web" in out and "2 created" in out
    assert sorted(LaunchSpec.objects.values_list("name", flat=True)) == ["api", "web"]
    assert LaunchSpec.objects.get(name="web").labels == {"eipdash.io/pool": "web"}


def test_second_run_changes_nothing_and_diff_exits_0(tmp_path: Path) -> None:
    path = folder(tmp_path, {"api.json": document("api"), "web.json": document("web")})
    run(path)
    before = snapshot()
    out = run(path, "--prune")
    assert "no changes" in out and "2 unchanged" in out
    assert snapshot() == before  # not even updated_at moved
    assert exit_code(path, "--diff") == (0, "no changes\n")
    assert exit_code(path, "--diff", "--prune") == (0, SCOPE_DEFAULT + "no changes\n")


def test_diff_exits_1_and_changes_nothing(tmp_path: Path) -> None:
    path = folder(tmp_path, {"api.json": document("api"), "web.json": document("web")})
    run(path)
    before = snapshot()
    folder(tmp_path, {"api.json": document("api", tag_value="w", enabled=False), "new.json": document("fresh")})
    code, out = exit_code(path, "--diff", "--prune")
    assert code == 1, out
    assert "~ spec api: tagValue 'v' -> 'w', enabled True -> False" in out
    assert "+ spec fresh" in out
    assert "- spec web: deleted" in out
    assert snapshot() == before
    # Without --prune, the absent spec is not mentioned.
    code, out = exit_code(path, "--diff")
    assert code == 1 and "spec web" not in out


def test_an_invalid_file_changes_nothing_and_every_problem_is_listed(tmp_path: Path) -> None:
    path = folder(tmp_path, {"api.json": document("api")})
    run(path)
    before = snapshot()
    bad_spec = document("bad")
    bad_spec["launchSpec"]["elasticIpPool"] = {"tagSelector": {"tagKey": "aws:x"}}
    folder(tmp_path, {
        "api.json": document("api", tag_value="changed"),
        "new.json": document("fresh"),
        "broken.json": "{nope",
        "latin1.json": b"\xff\xfe",
        "bad.json": bad_spec,
        "twin.json": document("fresh"),
        "elsewhere.json": document("far", cluster="nowhere"),
    })
    code, out = exit_code(path, "--prune")
    assert code == 2 and "nothing changed" in out
    assert "broken.json: not valid JSON" in out
    assert "latin1.json: not UTF-8" in out
    assert "bad.json: elasticIpPool.tagSelector.tagKey must not start with 'aws:'" in out
    assert "twin.json: launch spec 'fresh' is also in new.json" in out
    assert "elsewhere.json: unknown cluster 'nowhere'" in out
    assert snapshot() == before
    assert not Cluster.objects.filter(name="nowhere").exists()


def test_prune_disables_a_holding_spec_and_deletes_an_empty_one(tmp_path: Path) -> None:
    path = folder(tmp_path, {"api.json": document("api"), "held.json": document("held"),
                             "empty.json": document("empty")})
    run(path)
    claim = hold_eip("held")
    folder(tmp_path, {"api.json": document("api")})
    out = run(path, "--prune")
    assert "- spec held: disabled, it drains its 1 EIP(s); a later --prune deletes it once it holds nothing" in out
    assert "- spec empty: deleted" in out
    assert "1 disabled, 1 deleted" in out
    held = LaunchSpec.objects.get(name="held")
    assert held.enabled is False
    assert not LaunchSpec.objects.filter(name="empty").exists()
    # Still draining: nothing changes, the output says why it is still there, and CI sees no difference.
    out = run(path, "--prune")
    assert "spec held: absent, disabled and still draining" in out and "0 disabled, 0 deleted" in out
    assert exit_code(path, "--diff", "--prune")[0] == 0
    # Once its EIP is released, the next prune deletes it.
    services.assignment_close(assignment=claim, reason="drained")
    code, out = exit_code(path, "--diff", "--prune")
    assert code == 1 and "- spec held: deleted" in out
    run(path, "--prune")
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["api"]


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    run(folder(tmp_path, {"api.json": document("api")}))
    code, out = exit_code(folder(tmp_path, {}), "--prune")
    assert code == 2 and "no *.json file" in out
    assert LaunchSpec.objects.filter(name="api").exists()


def test_a_single_file_with_prune(tmp_path: Path) -> None:
    run(folder(tmp_path, {"api.json": document("api"), "web.json": document("web")}))
    single = tmp_path / "only.json"
    single.write_text(json.dumps(document("web")))
    out = run(single, "--prune")
    assert "- spec api: deleted" in out
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["web"]


def test_moving_a_holding_spec_to_another_cluster_is_refused(tmp_path: Path) -> None:
    call_command("cluster", "add", "eu", "--region", "eu-west-1", "--kube-context", "eu", stdout=StringIO())
    path = folder(tmp_path, {"api.json": document("api")})
    run(path)
    hold_eip("api")
    folder(tmp_path, {"api.json": document("api", cluster="eu")})
    code, out = exit_code(path)
    assert code == 2 and "api.json: launch spec 'api' holds EIPs in cluster 'default'" in out
    assert LaunchSpec.objects.get(name="api").cluster.name == "default"


def test_sync_service_result() -> None:
    """The contract the REST API relies on: SyncResult's lists, diff and `changed`."""
    result = services.launch_spec_sync(documents=[("a", document("api"))], dry_run=True)
    assert (result.created, result.applied, result.changed) == (["api"], False, True)
    assert not LaunchSpec.objects.exists()
    result = services.launch_spec_sync(documents=[("a", document("api")), ("b", document("web"))])
    assert (result.created, result.applied, result.problems) == (["api", "web"], True, [])
    result = services.launch_spec_sync(documents=[("a", document("api", tag_value="x"))], prune=True)
    assert (result.updated, result.deleted, result.applied) == (["api"], ["web"], True)
    assert result.diff == ["~ spec api: tagValue 'v' -> 'x'", "- spec web: deleted (holds no EIP)"]
    result = services.launch_spec_sync(documents=[("a", document("api", tag_value="x"))])
    assert (result.unchanged, result.changed, result.diff) == (["api"], False, [])
    result = services.launch_spec_sync(documents=[("a", {"launchSpec": {"name": "x"}})])
    assert result.problems and all(p.startswith("a: ") for p in result.problems) and not result.applied


# --- review findings (issue 12) ----------------------------------------------------------------------------


def test_the_service_refuses_a_prune_without_any_document(tmp_path: Path) -> None:
    """Every caller (the API's `{"launchSpecs": [], "prune": true}` too), not only the CLI's empty folder."""
    run(folder(tmp_path, {"api.json": document("api"), "web.json": document("web")}))
    before = snapshot()
    for dry_run in (True, False):
        result = services.launch_spec_sync(documents=[], prune=True, dry_run=dry_run)
        assert result.problems == [services.SYNC_EMPTY_PRUNE] and not result.applied
        assert (result.deleted, result.disabled) == ([], [])
    assert snapshot() == before


def _two_clusters(tmp_path: Path) -> None:
    call_command("cluster", "add", "eu", "--region", "eu-west-1", "--kube-context", "eu", stdout=StringIO())
    run(folder(tmp_path, {"api.json": document("api"), "far.json": document("far", cluster="eu"),
                          "near.json": document("near", cluster="eu")}))


def test_prune_only_touches_the_clusters_the_documents_name(tmp_path: Path) -> None:
    """A folder per cluster: pruning the default cluster's folder leaves the other cluster's specs alone."""
    _two_clusters(tmp_path)
    path = folder(tmp_path, {"api.json": document("api")})
    out = run(path, "--prune")
    assert SCOPE_DEFAULT in out and "0 deleted" in out
    assert sorted(LaunchSpec.objects.values_list("name", flat=True)) == ["api", "far", "near"]
    assert all(LaunchSpec.objects.values_list("enabled", flat=True))
    # The eu folder prunes only eu.
    path = folder(tmp_path, {"far.json": document("far", cluster="eu")})
    out = run(path, "--prune")
    assert "prune scope: cluster eu (the clusters the input names)" in out and "- spec near: deleted" in out
    assert sorted(LaunchSpec.objects.values_list("name", flat=True)) == ["api", "far"]


def test_cluster_sets_the_prune_scope_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    _two_clusters(tmp_path)
    before = snapshot()
    path = folder(tmp_path, {"api.json": document("api")})
    code, out = exit_code(path, "--prune", "--cluster", "nowhere")
    assert code == 2 and "unknown cluster 'nowhere' (known: default, eu)" in out
    code, out = exit_code(path, "--cluster", "eu")
    assert code == 2 and "--cluster sets the scope of --prune" in out
    assert snapshot() == before
    # eu's folder, scoped explicitly to eu: eu's specs it does not name go.
    eu = folder(tmp_path, {"far.json": document("far", cluster="eu")})
    code, out = exit_code(eu, "--diff", "--prune", "--cluster", "eu")
    assert code == 1 and "prune scope: cluster eu (as asked)" in out
    assert "- spec near: deleted" in out and "spec far" not in out and "spec api" not in out
    result = services.launch_spec_sync(documents=[("a", document("far", cluster="eu"))], prune=True, cluster="eu",
                                       dry_run=True)
    assert (result.deleted, result.prune_clusters) == (["near"], ["eu"])


def test_a_prune_scoped_to_a_cluster_that_no_document_names_is_refused(tmp_path: Path) -> None:
    """The default cluster's folder pointed at eu by mistake would delete every spec of eu: refused, as an empty
    prune is, on the CLI and the API alike (both go through launch_spec_sync)."""
    _two_clusters(tmp_path)
    before = snapshot()
    path = folder(tmp_path, {"api.json": document("api")})
    code, out = exit_code(path, "--prune", "--cluster", "eu")
    assert code == 2 and "no document names cluster 'eu', the scope of prune" in out
    assert snapshot() == before
    result = services.launch_spec_sync(documents=[("a", document("api"))], prune=True, cluster="eu")
    assert result.problems == [services.SYNC_FOREIGN_PRUNE.format(cluster="eu")] and not result.deleted
    assert snapshot() == before


def waiting_node(spec_name: str) -> Node:
    """A live node of the spec under the startup taint, with no EIP (its pool is empty or exhausted)."""
    spec = LaunchSpec.objects.get(name=spec_name)
    now = timezone.now()
    return Node.objects.create(cluster=spec.cluster, name=f"wait-{spec_name}", instance_id=f"i-w{spec.pk}",
                               launch_spec=spec, first_seen_at=now, last_seen_at=now, state=Node.State.WAITING,
                               startup_tainted=True)


def test_prune_disables_rather_than_deletes_a_spec_whose_nodes_wait_tainted(tmp_path: Path) -> None:
    path = folder(tmp_path, {"api.json": document("api"), "empty.json": document("empty")})
    run(path)
    node = waiting_node("empty")
    folder(tmp_path, {"api.json": document("api")})
    out = run(path, "--prune")
    assert ("- spec empty: disabled, not deleted: 1 node(s) still wait under the startup taint, which only this "
            "spec lifts") in out
    assert LaunchSpec.objects.get(name="empty").enabled is False
    out = run(path, "--prune")
    assert "spec empty: absent, disabled and still draining" in out
    # The node is gone: the next prune deletes the spec.
    Node.objects.filter(pk=node.pk).update(state=Node.State.GONE, deleted_at=timezone.now())
    run(path, "--prune")
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["api"]


def test_delete_refuses_a_spec_whose_nodes_wait_tainted(tmp_path: Path) -> None:
    run(folder(tmp_path, {"empty.json": document("empty")}))
    node = waiting_node("empty")
    with pytest.raises(CommandError) as refused:
        call_command("launchspec", "delete", "empty", stdout=StringIO())
    assert refused.value.returncode == 2
    assert "launch spec 'empty' has 1 node(s) still waiting under the startup taint" in str(refused.value)
    assert LaunchSpec.objects.filter(name="empty").exists()
    # The node object deleted from Kubernetes (its row keeps its last state): nothing left to lift.
    Node.objects.filter(pk=node.pk).update(deleted_at=timezone.now())
    call_command("launchspec", "delete", "empty", stdout=StringIO())
    assert not LaunchSpec.objects.exists()


def test_a_sync_over_the_cap_is_refused_and_nothing_changes() -> None:
    documents = [(f"d{i}", document(f"s{i}")) for i in range(services.SYNC_MAX_DOCUMENTS + 1)]
    result = services.launch_spec_sync(documents=documents, dry_run=True)
    assert result.problems == [f"{services.SYNC_MAX_DOCUMENTS + 1} launch specs in one sync: at most "
                               f"{services.SYNC_MAX_DOCUMENTS}; nothing changed"]
    assert result.created == [] and not LaunchSpec.objects.exists()


def test_a_sync_looks_each_cluster_up_once(django_assert_max_num_queries: Any) -> None:
    documents = [(f"d{i}", document(f"s{i}")) for i in range(200)]
    with django_assert_max_num_queries(10):
        result = services.launch_spec_sync(documents=documents, dry_run=True)
    assert len(result.created) == 200


def test_applied_is_true_when_the_record_already_matches() -> None:
    services.launch_spec_sync(documents=[("a", document("api"))])
    result = services.launch_spec_sync(documents=[("a", document("api"))])
    assert (result.changed, result.applied, result.unchanged) == (False, True, ["api"])
    assert services.launch_spec_sync(documents=[("a", document("api"))], dry_run=True).applied is False


def test_the_cli_sync_names_its_actor(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The API logs the user who synced; the CLI the OS user ("cli:<user>", or "cli")."""
    import getpass

    with caplog.at_level("INFO", logger="pools.services"):
        run(folder(tmp_path, {"api.json": document("api")}))
    assert f"launch specs synced by cli:{getpass.getuser()}: 1 created" in caplog.text


def test_diff_says_which_unmanaged_eips_a_selector_takes_into_its_pool_and_which_it_lets_go(tmp_path: Path) -> None:
    path = folder(tmp_path, {"api.json": document("api")})
    run(path)
    now = timezone.now()
    UnmanagedAddress.objects.create(allocation_id="eipalloc-bastion", region="us-east-1", public_ip="127.0.0.9",
                                    tags={"pool": "w"}, association_id="eipassoc-1", instance_id="i-0bastion",
                                    last_seen_at=now)
    UnmanagedAddress.objects.create(allocation_id="eipalloc-spare", region="us-east-1", public_ip="127.0.0.12",
                                    tags={"pool": "z"}, last_seen_at=now)
    UnmanagedAddress.objects.create(allocation_id="eipalloc-far", region="eu-west-1", public_ip="127.0.0.10",
                                    tags={"pool": "w"}, last_seen_at=now)  # another region's: no spec here takes it
    ElasticIP.objects.create(allocation_id="eipalloc-api", region="us-east-1", public_ip="127.0.0.5",
                             tags={"pool": "v"}, last_seen_at=now)
    folder(tmp_path, {"api.json": document("api", tag_value="w"), "fresh.json": document("fresh", tag_value="z")})

    code, out = exit_code(path, "--diff")
    assert code == 1, out
    assert out.splitlines()[:5] == [
        "~ spec api: tagValue 'v' -> 'w'",
        "  + pool takes 127.0.0.9 (eipalloc-bastion), now unmanaged, attached to i-0bastion",
        "  - pool lets go of 127.0.0.5 (eipalloc-api), now free",
        "+ spec fresh (cluster default, pool pool=z)",
        "  + pool takes 127.0.0.12 (eipalloc-spare), now unmanaged",
    ]
    # The same lines in the service's result (the API's `diff`), and the sync that applies says them too.
    dry = services.launch_spec_sync(documents=[("a", document("api", tag_value="w"))], dry_run=True)
    assert dry.diff[1:] == ["  + pool takes 127.0.0.9 (eipalloc-bastion), now unmanaged, attached to i-0bastion",
                            "  - pool lets go of 127.0.0.5 (eipalloc-api), now free"]
    assert "  + pool takes 127.0.0.12 (eipalloc-spare), now unmanaged" in run(path)
    assert exit_code(path, "--diff") == (0, "no changes\n")
