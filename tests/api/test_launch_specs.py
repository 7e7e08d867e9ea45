"""/api/v1/launch-specs/: the Ocean documents of `launchspec apply` and the export, the idempotent PUT, DELETE's
409 while a spec holds EIPs, every problem listed as the CLI lists them, the plan preview, the session with CSRF,
and the folder sync (services.launch_spec_sync)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools import selectors, services
from pools.api.serializers import SyncResultSerializer
from pools.models import ApiToken, Assignment, Cluster, Event, LaunchSpec, Node, UnmanagedAddress
from pools.specfile import launch_spec_to_ocean
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld
from tests.pools.plans import store_plan_as_a_pass

SPECS = "/api/v1/launch-specs/"

NEW = {
    "launchSpec": {
        "name": "ingress",
        "labels": [{"key": "eipdash.io/pool", "value": "ingress"}],
        "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}},
        "cluster": "prod",
        "region": "us-east-1",
        "enabled": True,
    }
}

# Four problems at once: name, labels, tag key, region.
BAD = {"launchSpec": {"name": "-bad", "labels": [], "elasticIpPool": {"tagSelector": {"tagKey": "aws:x"}},
                      "region": "mars-1"}}


def spec_url(name: str) -> str:
    return f"{SPECS}{name}"


def test_list_and_get_are_the_export_documents(web_world: WebWorld, viewer_api: Api, viewer_client: Client) -> None:
    exported = viewer_client.get(reverse("launch-spec-export", args=["egress"])).json()
    listing = viewer_api.get(SPECS)
    assert listing.status_code == 200 and listing.json() == {"launchSpecs": [exported]}
    one = viewer_api.get(spec_url("egress"))
    assert one.status_code == 200 and one.json() == exported == launch_spec_to_ocean(web_world.spec)
    missing = viewer_api.get(spec_url("nope"))
    assert missing.status_code == 404 and missing.json()["detail"] == "no launch spec named 'nope'"


def test_put_creates_201_then_updates_200_and_is_idempotent(web_world: WebWorld, operator_api: Api) -> None:
    created = operator_api.put(spec_url("ingress"), NEW)
    assert created.status_code == 201, created.content
    assert created.json() == NEW and created["Location"] == spec_url("ingress")
    spec = LaunchSpec.objects.get(name="ingress")
    assert (spec.cluster.name, spec.labels, spec.tag_value) == ("prod", {"eipdash.io/pool": "ingress"}, "ingress")

    again = operator_api.put(spec_url("ingress"), NEW)
    assert again.status_code == 200 and again.json() == NEW
    assert LaunchSpec.objects.filter(name="ingress").count() == 1

    changed = copy.deepcopy(NEW)
    changed["launchSpec"]["elasticIpPool"]["tagSelector"] = {"tagKey": "other"}
    changed["launchSpec"]["enabled"] = False
    updated = operator_api.put(spec_url("ingress"), changed)
    assert updated.status_code == 200 and updated.json() == changed
    spec.refresh_from_db()
    assert (spec.tag_key, spec.tag_value, spec.enabled) == ("other", None, False)


def test_a_get_put_back_changes_nothing(web_world: WebWorld, operator_api: Api) -> None:
    document = operator_api.get(spec_url("egress")).json()
    before = LaunchSpec.objects.values().get(name="egress")
    response = operator_api.put(spec_url("egress"), document)
    assert response.status_code == 200 and response.json() == document
    after = LaunchSpec.objects.values().get(name="egress")
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"}


def test_put_takes_the_name_from_the_url_when_the_body_has_none(web_world: WebWorld, operator_api: Api) -> None:
    bare = {k: v for k, v in NEW["launchSpec"].items() if k != "name"}
    assert operator_api.put(spec_url("from-url"), bare).status_code == 201
    assert LaunchSpec.objects.filter(name="from-url").exists()


def _cli_problems(tmp_path: Path, document: Any) -> list[str]:
    path = tmp_path / "spec.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(CommandError) as refused:
        call_command("launchspec", "apply", "-f", str(path))
    text = str(refused.value)
    if "\n" not in text:
        return [text.removeprefix(f"{path}: ")]
    return [line.removeprefix("  - ") for line in text.splitlines()[1:]]


def test_invalid_input_is_400_with_every_problem_in_the_clis_words(
    web_world: WebWorld, operator_api: Api, tmp_path: Path
) -> None:
    response = operator_api.put(spec_url("-bad"), BAD)
    assert response.status_code == 400
    problems = response.json()["problems"]
    assert len(problems) == 4 and problems == _cli_problems(tmp_path, BAD)
    assert "reserved by AWS" in " ".join(problems) and "mars-1" in " ".join(problems)
    # Not JSON at all: the CLI's one line.
    garbled = operator_api.put(spec_url("x"), "{nope", raw=True)
    assert garbled.status_code == 400 and garbled.json()["problems"] == _cli_problems(tmp_path, "{nope")
    # A refusal of the service (a cluster that is not configured), in the CLI's words too.
    unknown = copy.deepcopy(NEW)
    unknown["launchSpec"]["cluster"] = "elsewhere"
    refused = operator_api.put(spec_url("ingress"), unknown)
    assert refused.status_code == 400 and refused.json()["problems"] == _cli_problems(tmp_path, unknown)
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["egress"]


def test_a_body_naming_another_spec_is_400_with_the_other_problems_too(web_world: WebWorld, operator_api: Api) -> None:
    other = copy.deepcopy(BAD)
    other["launchSpec"]["name"] = "egress"
    response = operator_api.put(spec_url("ingress"), other)
    assert response.status_code == 400
    problems = response.json()["problems"]
    assert problems[0] == "name 'egress' in the body differs from 'ingress' in the URL" and len(problems) == 4
    assert LaunchSpec.objects.get(name="egress").tag_key == "eipdash/pool"


def test_delete_is_204_or_409_while_the_spec_holds_eips(web_world: WebWorld, operator_api: Api) -> None:
    response = operator_api.delete(spec_url("egress"))
    assert response.status_code == 409
    assert response.json()["detail"] == ("launch spec 'egress' still holds 1 EIP(s); disable it and let its nodes "
                                         "drain first")
    assert LaunchSpec.objects.filter(name="egress").exists()
    Assignment.objects.update(closed_at=web_world.assignments[0].opened_at)
    # Holding nothing, but a node still waits under the startup taint: nobody would lift it after a delete.
    Node.objects.filter(launch_spec=web_world.spec).update(startup_tainted=False)
    Node.objects.filter(name="node-b").update(startup_tainted=True, state="waiting")
    waiting = operator_api.delete(spec_url("egress"))
    assert waiting.status_code == 409
    assert "1 node(s) still waiting under the startup taint" in waiting.json()["detail"]
    Node.objects.filter(name="node-b").update(state="gone")
    assert operator_api.delete(spec_url("egress")).status_code == 204
    assert not LaunchSpec.objects.exists()
    assert operator_api.delete(spec_url("egress")).status_code == 404


def test_viewers_read_but_do_not_write(web_world: WebWorld, viewer_api: Api, stranger_api: Api) -> None:
    assert viewer_api.put(spec_url("ingress"), NEW).status_code == 403
    assert viewer_api.put(spec_url("egress"), viewer_api.get(spec_url("egress")).json()).status_code == 403
    assert viewer_api.delete(spec_url("egress")).status_code == 403
    assert "pools.delete_launchspec" in viewer_api.delete(spec_url("egress")).json()["detail"]
    for call in (lambda: stranger_api.get(SPECS), lambda: stranger_api.put(spec_url("ingress"), NEW),
                 lambda: stranger_api.delete(spec_url("egress"))):
        assert call().status_code == 403
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["egress"]


def test_the_session_works_with_csrf(web_world: WebWorld, operator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.get(SPECS).status_code == 200
    body = json.dumps(NEW)
    refused = client.put(spec_url("ingress"), body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    client.get(reverse("overview"))  # the page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    accepted = client.put(spec_url("ingress"), body, content_type="application/json", headers={"X-CSRFToken": token})
    assert accepted.status_code == 201


def test_the_plan_is_the_spec_pages_preview(web_world: WebWorld, viewer_api: Api) -> None:
    Node.objects.filter(name="node-b").update(labels=web_world.spec.labels)  # node-b waits for the free EIP
    planned = store_plan_as_a_pass(web_world.spec)  # what the spec's pass stores; the API only reads it
    response = viewer_api.get(f"{spec_url('egress')}/plan")
    assert response.status_code == 200
    preview = selectors.plan_preview(spec=web_world.spec)
    assert preview.planned_at is not None
    assert response.json() == {"launchSpec": "egress", "lines": preview.lines, "error": "",
                               "plannedAt": preview.planned_at.isoformat().replace("+00:00", "Z")}
    assert response.json()["lines"] == planned.describe() and "assign 203.0.113.2 → node-b" in planned.describe()
    assert viewer_api.get(f"{spec_url('nope')}/plan").status_code == 404


# --- POST /api/v1/launch-specs:sync --------------------------------------------------------------------

SYNC = "/api/v1/launch-specs:sync"


def _documents(api: Api) -> list[dict[str, Any]]:
    return api.get(SPECS).json()["launchSpecs"]


def test_sync_applies_a_set_of_documents(web_world: WebWorld, operator_api: Api) -> None:
    documents = [*_documents(operator_api), NEW]
    dry = operator_api.post(SYNC, {"launchSpecs": documents, "dryRun": True})
    assert dry.status_code == 200, dry.content
    assert dry.json()["created"] == ["ingress"] and dry.json()["applied"] is False and dry.json()["changed"] is True
    assert not LaunchSpec.objects.filter(name="ingress").exists()
    done = operator_api.post(SYNC, {"launchSpecs": documents})
    assert done.status_code == 200
    body = done.json()
    # The schema describes every field of the answer (`detail` only on a 400).
    assert set(body) == set(SyncResultSerializer().fields) - {"detail"}
    assert body["created"] == ["ingress"] and body["unchanged"] == ["egress"] and body["applied"] is True
    assert any(line.startswith("+ spec ingress") for line in body["diff"])
    assert LaunchSpec.objects.get(name="ingress").tag_value == "ingress"
    again = operator_api.post(SYNC, {"launchSpecs": documents})
    assert again.json()["changed"] is False and sorted(again.json()["unchanged"]) == ["egress", "ingress"]


def test_sync_with_one_bad_document_changes_nothing_and_lists_every_problem(
    web_world: WebWorld, operator_api: Api
) -> None:
    response = operator_api.post(SYNC, {"launchSpecs": [NEW, BAD]})
    assert response.status_code == 400
    problems = response.json()["problems"]
    assert len([p for p in problems if p.startswith("launchSpecs[1] (-bad): ")]) == 4, problems
    assert response.json()["applied"] is False
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["egress"]
    for body, says in (([NEW], "expected a JSON object"), ({"launchSpecs": [], "prune": "yes"}, "prune must be"),
                       ({"launchSpecs": [], "force": True}, "unknown field 'force'")):
        refused = operator_api.post(SYNC, body)
        assert refused.status_code == 400 and says in " ".join(refused.json()["problems"])


def test_sync_prune_disables_what_holds_eips(web_world: WebWorld, operator_api: Api, viewer_api: Api) -> None:
    assert viewer_api.post(SYNC, {"launchSpecs": [NEW], "prune": True}).status_code == 403
    # A viewer may ask what would change (a CI diff), never change it.
    dry = viewer_api.post(SYNC, {"launchSpecs": [NEW], "prune": True, "dryRun": True})
    assert dry.status_code == 200 and dry.json()["disabled"] == ["egress"]
    done = operator_api.post(SYNC, {"launchSpecs": [NEW], "prune": True})
    assert done.status_code == 200 and done.json()["disabled"] == ["egress"]
    assert LaunchSpec.objects.get(name="egress").enabled is False


def test_a_body_too_large_is_a_json_400(web_world: WebWorld, operator_api: Api, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = copy.deepcopy(NEW)
    big["launchSpec"]["padding"] = "x" * 2000
    for response in (operator_api.put(spec_url("ingress"), big), operator_api.post(SYNC, {"launchSpecs": [big]})):
        assert response.status_code == 400 and response.json()["problems"] == ["the body is larger than 1000 bytes"]
    assert not LaunchSpec.objects.filter(name="ingress").exists()


# --- review findings (issue 12) ----------------------------------------------------------------------------


def test_sync_prune_without_any_document_is_refused(web_world: WebWorld, operator_api: Api) -> None:
    for dry_run in (False, True):
        response = operator_api.post(SYNC, {"launchSpecs": [], "prune": True, "dryRun": dry_run})
        assert response.status_code == 400, response.content
        assert response.json()["problems"] == [services.SYNC_EMPTY_PRUNE]
        assert response.json()["deleted"] == [] and response.json()["disabled"] == []
    assert LaunchSpec.objects.get(name="egress").enabled is True


def test_sync_prune_scope_by_cluster(web_world: WebWorld, operator_api: Api) -> None:
    Cluster.objects.create(name="eu", region="eu-west-1", kube_context="eu")
    # The documents name only eu: prod's egress is out of the prune's scope.
    far = copy.deepcopy(NEW)
    far["launchSpec"].update(name="far", cluster="eu", region="eu-west-1")
    done = operator_api.post(SYNC, {"launchSpecs": [far], "prune": True})
    assert done.status_code == 200, done.content
    assert done.json()["pruneClusters"] == ["eu"] and done.json()["disabled"] == done.json()["deleted"] == []
    assert LaunchSpec.objects.get(name="egress").enabled is True
    # Asked for eu explicitly: the scope the documents name, nothing else of eu to prune.
    scoped = operator_api.post(SYNC, {"launchSpecs": [far], "prune": True, "cluster": "eu", "dryRun": True})
    assert scoped.status_code == 200 and scoped.json()["pruneClusters"] == ["eu"], scoped.content
    # Asked for prod, which no document names: that would disable every spec of prod; refused, as an empty prune.
    foreign = operator_api.post(SYNC, {"launchSpecs": [far], "prune": True, "cluster": "prod", "dryRun": True})
    assert foreign.status_code == 400 and foreign.json()["disabled"] == [], foreign.content
    assert foreign.json()["problems"] == [services.SYNC_FOREIGN_PRUNE.format(cluster="prod")]
    unknown = operator_api.post(SYNC, {"launchSpecs": [far], "prune": True, "cluster": "nowhere"})
    assert unknown.status_code == 400 and "unknown cluster 'nowhere'" in unknown.json()["problems"][0]
    alone = operator_api.post(SYNC, {"launchSpecs": [far], "cluster": "prod"})
    assert alone.status_code == 400 and alone.json()["problems"] == ["cluster sets the scope of prune: give prune too"]
    bad = operator_api.post(SYNC, {"launchSpecs": [far], "prune": True, "cluster": ["prod"]})
    assert bad.status_code == 400 and bad.json()["problems"][0].startswith("cluster must be a name")
    assert sorted(LaunchSpec.objects.values_list("name", flat=True)) == ["egress", "far"]


@pytest.mark.parametrize("unsafe", ["\udc80", "a\u202eb", "x\u2066y", "n\x00l"])
def test_sync_problem_texts_never_echo_unsafe_text(web_world: WebWorld, viewer_api: Api, unsafe: str) -> None:
    """A lone surrogate was a 500 (the problem echoed it into the JSON renderer); bidi marks were echoed raw."""
    for body in ({"launchSpecs": [{"name": unsafe}], "dryRun": True},
                 {"launchSpecs": [{"launchSpec": {"name": unsafe}}], "dryRun": True},
                 {"launchSpecs": [], "dryRun": True, unsafe: 1}):
        response = viewer_api.post(SYNC, json.dumps(body), raw=True)  # json.dumps writes \udc80 as an escape
        assert response.status_code == 400, response.content
        text = response.content.decode("utf-8")
        assert unsafe not in text and unsafe not in json.dumps(response.json(), ensure_ascii=False)


def test_sync_over_the_cap_is_refused_before_any_document_is_read(web_world: WebWorld, viewer_api: Api) -> None:
    documents = [{"launchSpec": {"name": f"s{i}"}} for i in range(services.SYNC_MAX_DOCUMENTS + 1)]
    response = viewer_api.post(SYNC, {"launchSpecs": documents, "dryRun": True})
    assert response.status_code == 400
    assert response.json() == {"detail": "refused, nothing changed", "problems": [
        f"{services.SYNC_MAX_DOCUMENTS + 1} launch specs in one sync: at most {services.SYNC_MAX_DOCUMENTS}; "
        "nothing changed"]}


def test_a_busy_spec_lists_no_change_that_did_not_happen(web_world: WebWorld, operator_api: Api,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager

    @contextmanager
    def busy(spec_id: int, wait_seconds: float = 0):  # the spec's lock held by a long pass
        yield False

    monkeypatch.setattr(services, "spec_lock", busy)
    changed = copy.deepcopy(_documents(operator_api)[0])
    changed["launchSpec"]["enabled"] = False
    response = operator_api.post(SYNC, {"launchSpecs": [changed, NEW]})
    assert response.status_code == 400
    body = response.json()
    assert body["problems"] == ["launch spec 'egress' is busy with a long pass; try again"]
    assert body["created"] == body["updated"] == [] and body["applied"] is False
    assert sorted(LaunchSpec.objects.values_list("name", flat=True)) == ["egress"]


def test_api_changes_are_events_with_the_token_that_made_them(
    web_world: WebWorld, operator_api: Api, operator: User
) -> None:
    """PUT, DELETE and a sync's prune each leave their events; the actor names the user and which token."""
    actor = f"{operator.username} (API token {ApiToken.objects.get(user=operator).prefix})"
    assert operator_api.put(spec_url("ingress"), NEW).status_code == 201
    changed = copy.deepcopy(NEW)
    changed["launchSpec"]["elasticIpPool"]["tagSelector"].pop("tagValue")
    assert operator_api.put(spec_url("ingress"), changed).status_code == 200
    assert operator_api.put(spec_url("ingress"), changed).status_code == 200  # unchanged: no event
    assert operator_api.delete(spec_url("ingress")).status_code == 204
    # A sync that names only a new spec of prod prunes egress, which holds an EIP: disabled, it drains.
    other = copy.deepcopy(NEW)
    other["launchSpec"]["name"] = "other"
    assert operator_api.post(SYNC, {"launchSpecs": [other], "prune": True}).status_code == 200

    events = Event.objects.filter(kind__startswith="spec_").order_by("id")
    assert [(e.kind, e.launch_spec, e.actor) for e in events] == [
        ("spec_created", "ingress", actor), ("spec_updated", "ingress", actor), ("spec_deleted", "ingress", actor),
        ("spec_created", "other", actor), ("spec_disabled", "egress", actor)]
    assert events.get(kind="spec_updated").reason == "tagValue 'ingress' -> None"
    assert events.get(kind="spec_disabled").reason.endswith("(pruned by a sync: no document names it)")


def test_put_says_which_eips_its_selector_takes_into_the_pool_and_lets_go(web_world: WebWorld,
                                                                          operator_api: Api) -> None:
    UnmanagedAddress.objects.create(allocation_id="eipalloc-bastion", region="us-east-1", public_ip="198.51.100.9",
                                    tags={"eipdash/pool": "egress-2"}, association_id="eipassoc-b",
                                    instance_id="i-0bastion", last_seen_at=timezone.now())
    document = operator_api.get(spec_url("egress")).json()
    document["launchSpec"]["elasticIpPool"]["tagSelector"]["tagValue"] = "egress-2"
    one, two = web_world.eips[0], web_world.eips[1]
    expected = [
        "+ pool takes 198.51.100.9 (eipalloc-bastion), now unmanaged, attached to i-0bastion",
        f"- pool lets go of {one.public_ip} ({one.allocation_id}), now on node node-a",
        f"- pool lets go of {two.public_ip} ({two.allocation_id}), now free",  # the gone one is not in it
    ]
    # Asked first (dry run): the sync's diff says it under the spec's line.
    dry = operator_api.post(SYNC, {"launchSpecs": [document], "dryRun": True})
    assert dry.status_code == 200 and dry.json()["diff"] == [
        "~ spec egress: tagValue 'egress' -> 'egress-2'", *[f"  {line}" for line in expected]]

    response = operator_api.put(spec_url("egress"), document)
    assert response.status_code == 200, response.content
    assert response.json() == {**document, "poolChanges": expected}
    assert LaunchSpec.objects.get(name="egress").tag_value == "egress-2"
    # A PUT that moves no EIP answers the document alone, as before.
    again = operator_api.put(spec_url("egress"), document)
    assert again.status_code == 200 and again.json() == document


def test_put_takes_min_free_and_get_shows_it_while_the_ocean_export_leaves_it_out(
        web_world: WebWorld, operator_api: Api, viewer_client: Client) -> None:
    headroom = copy.deepcopy(NEW)
    headroom["launchSpec"]["elasticIpPool"]["minFree"] = 2
    created = operator_api.put(spec_url("ingress"), headroom)
    assert created.status_code == 201 and created.json() == headroom
    assert LaunchSpec.objects.get(name="ingress").min_free == 2
    assert operator_api.get(spec_url("ingress")).json()["launchSpec"]["elasticIpPool"]["minFree"] == 2
    exported = viewer_client.get(reverse("launch-spec-export", args=["ingress"])).json()
    assert exported["launchSpec"]["elasticIpPool"] == {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}}
    headroom["launchSpec"]["elasticIpPool"]["minFree"] = -1
    refused = operator_api.put(spec_url("ingress"), headroom)
    assert refused.status_code == 400 and "elasticIpPool.minFree must be a whole number" in refused.content.decode()
    assert LaunchSpec.objects.get(name="ingress").min_free == 2
