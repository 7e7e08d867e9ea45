"""`manage.py launchspec`: Ocean JSON in; refused input changes nothing and exits 2."""

from __future__ import annotations

import getpass
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pools.models import Cluster, Event, LaunchSpec
from pools.specfile import SpecFileError, launch_spec_to_ocean, parse_launch_spec

pytestmark = pytest.mark.django_db

OCEAN = {
    "launchSpec": {
        "name": "ingress",
        "oceanId": "o-12345",
        "imageId": "ami-123",
        "labels": [{"key": "eipdash.io/pool", "value": "ingress"}, {"key": "tier", "value": "edge"}],
        "elasticIpPool": {"tagSelector": {"tagKey": "myEIPPoolTagKey", "tagValue": "myEIPPoolTagValue"}},
    }
}


def apply(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "spec.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    out = StringIO()
    call_command("launchspec", "apply", "-f", str(path), stdout=out)
    return out.getvalue()


def refused(tmp_path: Path, data: Any) -> str:
    with pytest.raises(CommandError) as info:
        apply(tmp_path, data)
    assert info.value.returncode == 2
    return str(info.value)


def test_apply_creates_then_updates_by_name(tmp_path: Path) -> None:
    assert "created launch spec ingress" in apply(tmp_path, OCEAN)
    spec = LaunchSpec.objects.get(name="ingress")
    assert spec.labels == {"eipdash.io/pool": "ingress", "tier": "edge"}
    assert (spec.tag_key, spec.tag_value) == ("myEIPPoolTagKey", "myEIPPoolTagValue")
    assert spec.cluster.name == "default" and spec.cluster.region == "us-east-1"
    bare = dict(OCEAN["launchSpec"], elasticIpPool={"tagSelector": {"tagKey": "pool"}})
    assert "updated" in apply(tmp_path, bare)
    spec.refresh_from_db()
    assert (spec.tag_key, spec.tag_value) == ("pool", None)


def test_round_trip_through_ocean_json(tmp_path: Path) -> None:
    apply(tmp_path, OCEAN)
    exported = launch_spec_to_ocean(LaunchSpec.objects.get(name="ingress"))
    again = parse_launch_spec(exported)
    assert again.labels == {"eipdash.io/pool": "ingress", "tier": "edge"} and again.tag_value == "myEIPPoolTagValue"


def test_second_cluster_and_region(tmp_path: Path) -> None:
    # A second cluster is an admin's decision: `launchspec apply` never creates one.
    call_command("cluster", "add", "prod-eu", "--region", "eu-west-1", "--kube-context", "prod-eu", stdout=StringIO())
    apply(tmp_path, dict(OCEAN["launchSpec"], name="eu", cluster="prod-eu", region="eu-west-1"))
    assert Cluster.objects.get(name="prod-eu").region == "eu-west-1"
    message = refused(tmp_path, dict(OCEAN["launchSpec"], name="eu2", cluster="prod-eu", region="us-west-2"))
    assert "differs from cluster" in message
    assert not LaunchSpec.objects.filter(name="eu2").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"elasticIpPool": {"tagSelector": {"tagKey": "aws:cloudformation:stack"}}}, "must not start with 'aws:'"),
        ({"elasticIpPool": {"tagSelector": {"tagKey": ""}}}, "of 1-128 characters"),
        ({"elasticIpPool": {"tagSelector": {"tagKey": "k" * 129}}}, "of 1-128 characters"),
        ({"elasticIpPool": {"tagSelector": {"tagKey": "k", "tagValue": "v" * 257}}}, "at most 256"),
        ({"elasticIpPool": {}}, "tagSelector is required"),
        ({"labels": []}, "at least one"),
        ({"labels": [{"key": "bad key!", "value": "x"}]}, "label key"),
        ({"labels": [{"key": "UPPER.example.com/x", "value": "x"}]}, "prefix"),
        ({"labels": [{"key": "ok", "value": "-bad"}]}, "value"),
        ({"region": "mars-north-1"}, "not a known AWS region"),
        ({"name": ""}, "name is required"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_no_change(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    apply(tmp_path, OCEAN)
    before = list(LaunchSpec.objects.values())
    message = refused(tmp_path, dict(OCEAN["launchSpec"], **change))
    assert expected in message and "nothing changed" in message
    assert list(LaunchSpec.objects.values()) == before


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    assert "not valid JSON" in refused(tmp_path, "{nope")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("launchspec", "apply", "-f", str(tmp_path / "missing.json"))


def test_all_problems_are_listed_at_once() -> None:
    with pytest.raises(SpecFileError) as info:
        parse_launch_spec({"name": "x", "labels": [], "elasticIpPool": {"tagSelector": {"tagKey": "aws:x"}}})
    assert len(info.value.messages) == 2


def test_list_and_delete(tmp_path: Path) -> None:
    apply(tmp_path, OCEAN)
    out = StringIO()
    call_command("launchspec", "list", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "NAME\tCLUSTER\tREGION\tLABELS\tSELECTOR\tSTATE"
    assert lines[1].startswith("ingress\tdefault\tus-east-1\t")
    call_command("launchspec", "delete", "ingress", stdout=StringIO())
    assert not LaunchSpec.objects.exists()
    with pytest.raises(CommandError, match="no launch spec named"):
        call_command("launchspec", "delete", "ingress")


def test_apply_and_delete_are_events_with_the_os_user_as_actor(tmp_path: Path) -> None:
    """The CLI has no login: its actor is the OS account that ran manage.py (cli:<user>)."""
    actor = f"cli:{getpass.getuser()}"
    apply(tmp_path, OCEAN)
    disabled = json.loads(json.dumps(OCEAN))
    disabled["launchSpec"]["enabled"] = False
    apply(tmp_path, disabled)
    apply(tmp_path, disabled)  # unchanged: no event
    refused(tmp_path, {"launchSpec": {**OCEAN["launchSpec"], "region": "mars-1"}})  # refused: no event
    call_command("launchspec", "delete", "ingress", stdout=StringIO())
    events = Event.objects.order_by("id")
    # The default cluster, made for the first spec that names none: it points the workers at a kube context.
    assert [(e.kind, e.launch_spec, e.cluster, e.actor) for e in events] == [
        ("cluster_added", "", "default", actor), ("spec_created", "ingress", "default", actor),
        ("spec_disabled", "ingress", "default", actor), ("spec_deleted", "ingress", "default", actor)]


def test_min_free_is_applied_audited_and_kept_in_the_document(tmp_path: Path) -> None:
    headroom = {"launchSpec": dict(OCEAN["launchSpec"], elasticIpPool={
        "tagSelector": {"tagKey": "pool", "tagValue": "ingress"}, "minFree": 3})}
    apply(tmp_path, headroom)
    spec = LaunchSpec.objects.get(name="ingress")
    assert spec.min_free == 3
    assert launch_spec_to_ocean(spec)["launchSpec"]["elasticIpPool"]["minFree"] == 3
    headroom["launchSpec"]["elasticIpPool"]["minFree"] = 1
    assert "updated" in apply(tmp_path, headroom)
    update = Event.objects.get(kind=Event.Kind.SPEC_UPDATED)
    assert "minFree 3 -> 1" in update.reason
    # Left out: 0, no headroom alert.
    apply(tmp_path, {"launchSpec": dict(OCEAN["launchSpec"], elasticIpPool={"tagSelector": {"tagKey": "pool"}})})
    assert LaunchSpec.objects.get(name="ingress").min_free == 0


@pytest.mark.parametrize("bad", [-1, True, "2", 2.5, 10_001, None])
def test_min_free_must_be_a_whole_number_from_zero(tmp_path: Path, bad: object) -> None:
    document = {"launchSpec": dict(OCEAN["launchSpec"], elasticIpPool={
        "tagSelector": {"tagKey": "pool"}, "minFree": bad})}
    assert "elasticIpPool.minFree must be a whole number from 0 to 10000" in refused(tmp_path, document)
    assert not LaunchSpec.objects.exists()
