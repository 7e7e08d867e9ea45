"""Clusters with a kube context or a kubeconfig file, and a region: `manage.py cluster`, the admin form, and
launch specs that name a cluster."""

from __future__ import annotations

import getpass
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from pools import selectors, services
from pools.admin import ClusterForm
from pools.models import Assignment, Cluster, Event, LaunchSpec, Node
from pools.specfile import SpecFileError, parse_launch_spec
from tests.fixtures.world import World
from workers import executor
from workers.reassign import reassign_eip

pytestmark = pytest.mark.django_db


def add(*args: str) -> str:
    out = StringIO()
    call_command("cluster", "add", *args, stdout=out)
    return out.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as info:
        add(*args)
    assert info.value.returncode == 2
    return str(info.value)


def listed() -> list[str]:
    out = StringIO()
    call_command("cluster", "list", stdout=out)
    return out.getvalue().splitlines()


def kubeconfig(tmp_path: Path, name: str = "kubeconfig") -> Path:
    """A kubeconfig the client can load (under tmp_path, which the suite's EIPDASH_KUBECONFIG_DIR holds), with
    the contexts these tests name and a current one."""
    path = tmp_path / name
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "main",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}
                     for context in ("main", "prod", "prod-eu", "staging")],
    }))
    return path


def test_add_with_a_kubeconfig_and_a_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    out = add("eu", "--region", "eu-west-1", "--kubeconfig", str(path), "--context", "prod-eu")
    assert f"added cluster eu (eu-west-1, context prod-eu, kubeconfig {path})" in out
    cluster = Cluster.objects.get(name="eu")
    assert (cluster.region, cluster.kube_context, cluster.kubeconfig) == ("eu-west-1", "prod-eu", str(path))
    add("us", "--region", "us-east-1", "--kube-context", "prod-us")  # the old spelling still works
    lines = listed()
    assert lines[0] == "NAME\tREGION\tCONTEXT\tKUBECONFIG"
    assert lines[1] == f"eu\teu-west-1\tprod-eu\t{path}"
    assert lines[2] == "us\tus-east-1\tprod-us\t(default)"
    # Each is an event of the history, with the OS user who ran the command.
    added = Event.objects.filter(kind="cluster_added").order_by("id")
    assert [(e.cluster, e.region, e.actor) for e in added] == [("eu", "eu-west-1", f"cli:{getpass.getuser()}"),
                                                               ("us", "us-east-1", f"cli:{getpass.getuser()}")]
    assert added[0].reason == f"cluster 'eu' added: region 'eu-west-1', kube context 'prod-eu', kubeconfig '{path}'"


def test_a_relative_kubeconfig_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig(tmp_path, "eu.yaml")
    monkeypatch.chdir(tmp_path)
    add("eu", "--region", "eu-west-1", "--kubeconfig", "eu.yaml")
    assert Cluster.objects.get(name="eu").kubeconfig == str(tmp_path / "eu.yaml")


def test_a_missing_kubeconfig_is_refused(tmp_path: Path) -> None:
    message = refused("eu", "--region", "eu-west-1", "--kubeconfig", str(tmp_path / "nope"))
    assert "does not exist" in message
    assert not Cluster.objects.exists()
    assert "must be an absolute path" in "; ".join(services.cluster_problems(
        name="eu", region="eu-west-1", kube_context="", kubeconfig="relative/kubeconfig"))


def test_overlap_is_a_context_of_one_kubeconfig(tmp_path: Path) -> None:
    first, second = kubeconfig(tmp_path, "a"), kubeconfig(tmp_path, "b")
    add("a", "--region", "us-east-1", "--kubeconfig", str(first))
    # The current context of another file is another cluster; of the same file, the same one.
    add("b", "--region", "eu-west-1", "--kubeconfig", str(second))
    message = refused("a2", "--region", "us-east-1", "--kubeconfig", str(first))
    assert f"cluster 'a' already uses the current kube context of kubeconfig {first}" in message
    # A row from before the rule is flagged by `list`.
    Cluster.objects.create(name="legacy", region="us-east-1", kubeconfig=str(first))
    flagged = [line.split("\t")[0] for line in listed() if "OVERLAP" in line]
    assert flagged == ["a", "legacy"]


def test_admin_form_takes_the_kubeconfig(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    form = ClusterForm(data={"name": "eu", "region": "eu-west-1", "kube_context": "", "kubeconfig": str(path)})
    assert form.is_valid(), form.errors
    assert form.save().kubeconfig == str(path)
    missing = ClusterForm(data={"name": "us", "region": "us-east-1", "kube_context": "",
                                "kubeconfig": str(tmp_path / "gone")})
    assert not missing.is_valid() and "does not exist" in str(missing.errors)
    same = ClusterForm(data={"name": "eu2", "region": "eu-west-1", "kube_context": "", "kubeconfig": str(path)})
    assert not same.is_valid() and "already uses" in str(same.errors)


def test_a_spec_naming_a_cluster_that_is_not_configured_is_refused() -> None:
    data = parse_launch_spec({"name": "web", "cluster": "nowhere", "labels": {"a": "b"},
                              "elasticIpPool": {"tagSelector": {"tagKey": "pool"}}})
    with pytest.raises(SpecFileError, match="unknown cluster 'nowhere'"):
        services.launch_spec_apply(data=data)
    assert not Cluster.objects.exists() and not LaunchSpec.objects.exists()
    # The default cluster from the environment is still made on demand.
    default = parse_launch_spec({"name": "web", "labels": {"a": "b"},
                                 "elasticIpPool": {"tagSelector": {"tagKey": "p"}}})
    spec, created = services.launch_spec_apply(data=default)
    assert created and spec.cluster.name == "default" and spec.cluster.region == "us-east-1"


def test_the_default_cluster_in_another_region_is_refused_and_not_made() -> None:
    data = parse_launch_spec({"name": "web", "region": "eu-west-1", "labels": {"a": "b"},
                              "elasticIpPool": {"tagSelector": {"tagKey": "pool"}}})
    with pytest.raises(SpecFileError, match="differs from cluster 'default'"):
        services.launch_spec_apply(data=data)
    assert not Cluster.objects.exists()


def test_a_cluster_with_a_kubeconfig_is_not_flagged_for_lacking_a_context(tmp_path: Path) -> None:
    add("eu", "--region", "eu-west-1", "--kubeconfig", str(kubeconfig(tmp_path)))
    add("bare", "--region", "us-west-2")
    for name, cluster in (("eu-web", "eu"), ("bare-web", "bare")):
        services.launch_spec_apply(data=parse_launch_spec({
            "name": name, "cluster": cluster, "labels": {"a": "b"}, "elasticIpPool": {"tagSelector": {"tagKey": "p"}}}))
    problems = selectors.spec_problem_list(stats=selectors.pool_stats_list())
    flagged = sorted(p.spec.name for p in problems if p.code == "no_kube_context")
    assert flagged == ["bare-web"]


def test_reassign_picks_the_node_of_the_eips_own_cluster(world: World) -> None:
    """Two clusters of one region, each with a node called `target`: the EIP goes to its own spec's node."""
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("holder")
    executor.reconcile_spec(spec.pk)
    world.node("target")
    executor.reconcile_spec(spec.pk)  # target waits: the pool is exhausted
    other = services.cluster_create(name="other", region="us-east-1", kube_context="other")
    other_spec, _ = services.launch_spec_apply(data=parse_launch_spec({
        "name": "other-web", "cluster": "other", "labels": {"a": "b"},
        "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "other"}}}))
    now = timezone.now()
    Node.objects.create(cluster=other, name="target", instance_id="i-other", launch_spec=other_spec,
                        first_seen_at=now, last_seen_at=now, labels={"a": "b"}, instance_state="running")

    outcome = reassign_eip(allocation_id=allocation_id, node_name="target", actor="op")
    assert outcome.confirmed
    assert world.eip_on("target") == allocation_id and world.eip_on("holder") is None
    claim = Assignment.objects.get(closed_at__isnull=True)
    assert (claim.node.cluster.name, claim.node.name) == ("default", "target")


def test_overlap_is_checked_on_the_kubeconfigs_real_path(tmp_path: Path) -> None:
    """A symlink (or a "..") to a kubeconfig another row uses is the same file: the same nodes."""
    real = kubeconfig(tmp_path, "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    add("a", "--region", "us-east-1", "--kubeconfig", str(real), "--context", "prod")
    message = refused("b", "--region", "us-east-1", "--kubeconfig", str(link), "--context", "prod")
    assert "cluster 'a' already uses kube context 'prod'" in message
    dotted = tmp_path / "sub"
    dotted.mkdir()
    message = refused("c", "--region", "us-east-1", "--kubeconfig", f"{dotted}/../real", "--context", "prod")
    assert "cluster 'a' already uses kube context 'prod'" in message
    # Rows made before the check: `cluster list` flags both.
    Cluster.objects.create(name="legacy", region="us-east-1", kube_context="prod", kubeconfig=str(link))
    assert sum("OVERLAP" in line for line in listed()) == 2
    add("d", "--region", "us-east-1", "--kubeconfig", str(link), "--context", "staging")  # another context: fine
