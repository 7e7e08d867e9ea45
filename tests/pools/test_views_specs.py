"""Launch-spec pages: create, edit, import, export, and the user-data snippet."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from pools.models import Event, LaunchSpec, Node
from pools.specfile import launch_spec_to_ocean
from tests.fixtures.web import WebWorld, make_eip
from tests.fixtures.world import World, reconcile
from tests.pools.plans import store_plan_as_a_pass

pytestmark = pytest.mark.django_db

OCEAN = {
    "launchSpec": {
        "name": "ingress",
        "labels": [{"key": "eks.amazonaws.com/nodegroup", "value": "ingress"}],
        "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}},
        "region": "us-east-1",
        "cluster": "prod",
    }
}


def _form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "ingress",
        "cluster": "prod",
        "region": "us-east-1",
        "labels": "eks.amazonaws.com/nodegroup=ingress\nteam=edge",
        "tag_key": "eipdash/pool",
        "tag_value": "ingress",
        "enabled": "on",
    }
    data.update(overrides)
    return data


def test_viewer_cannot_create_edit_or_import(viewer_client: Client, web_world: WebWorld) -> None:
    assert viewer_client.get(reverse("launch-spec-create")).status_code == 403
    assert viewer_client.post(reverse("launch-spec-create"), _form()).status_code == 403
    assert viewer_client.post(reverse("launch-spec-edit", args=["egress"]), _form(name="egress")).status_code == 403
    assert viewer_client.post(reverse("launch-spec-import"), {"document": json.dumps(OCEAN)}).status_code == 403
    assert not LaunchSpec.objects.filter(name="ingress").exists()


def test_anonymous_cannot_create(client: Client, db: None) -> None:
    response = client.post(reverse("launch-spec-create"), _form())
    assert response.status_code == 302 and not LaunchSpec.objects.exists()


def test_operator_creates_a_spec(operator_client: Client, web_world: WebWorld) -> None:
    response = operator_client.post(reverse("launch-spec-create"), _form())
    assert response.status_code == 302 and response["Location"] == reverse("launch-spec-detail", args=["ingress"])
    spec = LaunchSpec.objects.get(name="ingress")
    assert spec.labels == {"eks.amazonaws.com/nodegroup": "ingress", "team": "edge"}
    assert (spec.tag_key, spec.tag_value, spec.cluster.name, spec.enabled) == ("eipdash/pool", "ingress", "prod", True)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"tag_key": "aws:reserved"}, "must not start with &#x27;aws:&#x27;"),
        ({"labels": "not a pair"}, "expected key=value"),
        ({"labels": "bad key!=x"}, "label key"),
        ({"name": "-bad"}, "name is required"),
        # Only the regions of known clusters are offered (and accepted).
        ({"region": "us-west-2"}, "us-west-2 is the region of no cluster"),
        ({"cluster": "nosuch"}, "no cluster named nosuch"),
    ],
)
def test_invalid_input_is_refused_like_launchspec_apply(
    operator_client: Client, web_world: WebWorld, overrides: dict[str, str], message: str
) -> None:
    response = operator_client.post(reverse("launch-spec-create"), _form(**overrides))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not LaunchSpec.objects.exclude(name="egress").exists()


def test_create_refuses_an_existing_name(operator_client: Client, web_world: WebWorld) -> None:
    response = operator_client.post(reverse("launch-spec-create"), _form(name="egress", tag_value="other"))
    assert "exists" in response.content.decode()
    assert LaunchSpec.objects.get(name="egress").tag_value == "egress"


def test_operator_edits_a_spec_but_not_its_name(operator_client: Client, web_world: WebWorld) -> None:
    url = reverse("launch-spec-edit", args=["egress"])
    assert 'value="egress"' in operator_client.get(url).content.decode()
    response = operator_client.post(url, _form(name="renamed", tag_value="egress-2", labels="role=nat"))
    assert response.status_code == 302
    spec = LaunchSpec.objects.get(pk=web_world.spec.pk)
    assert (spec.name, spec.tag_value, spec.labels) == ("egress", "egress-2", {"role": "nat"})
    assert not LaunchSpec.objects.filter(name="renamed").exists()


def test_import_by_paste(operator_client: Client, web_world: WebWorld) -> None:
    response = operator_client.post(reverse("launch-spec-import"), {"document": json.dumps(OCEAN)})
    assert response.status_code == 302
    assert LaunchSpec.objects.get(name="ingress").labels == {"eks.amazonaws.com/nodegroup": "ingress"}


def test_import_by_upload_of_the_bare_object(operator_client: Client, web_world: WebWorld) -> None:
    upload = SimpleUploadedFile("spec.json", json.dumps(OCEAN["launchSpec"]).encode(), "application/json")
    response = operator_client.post(reverse("launch-spec-import"), {"file": upload})
    assert response.status_code == 302
    assert LaunchSpec.objects.filter(name="ingress").exists()


@pytest.mark.parametrize(
    "document,message",
    [
        ("{not json", "not valid JSON"),
        ("", "paste the JSON or choose a file"),
        (json.dumps({"launchSpec": {"name": "x", "labels": []}}), "labels must list at least one"),
    ],
)
def test_import_refuses_bad_documents(operator_client: Client, web_world: WebWorld, document: str, message: str):
    response = operator_client.post(reverse("launch-spec-import"), {"document": document})
    assert response.status_code == 400 and message in response.content.decode()
    assert LaunchSpec.objects.count() == 1


def test_export_round_trips_through_import(operator_client: Client, web_world: WebWorld) -> None:
    response = operator_client.get(reverse("launch-spec-export", args=["egress"]))
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    exported = json.loads(response.content)
    # For Ocean: eipdash's own headroom (elasticIpPool.minFree, inside Ocean's object) is left out.
    assert exported == launch_spec_to_ocean(web_world.spec, min_free=False)
    assert "minFree" not in exported["launchSpec"]["elasticIpPool"]
    LaunchSpec.objects.all().delete()
    # Its pool's EIPs belong to no spec now: the import says it takes them, and the operator confirms.
    asked = operator_client.post(reverse("launch-spec-import"), {"document": json.dumps(exported)})
    assert "egress is new: its pool would take these EIPs." in asked.content.decode()
    operator_client.post(reverse("launch-spec-import"), {"document": json.dumps(exported), "confirm": "overwrite"})
    spec = LaunchSpec.objects.get(name="egress")
    assert (spec.labels, spec.tag_key, spec.tag_value) == (web_world.spec.labels, "eipdash/pool", "egress")


def test_detail_shows_selector_pool_nodes_history_and_plan(viewer_client: Client, web_world: WebWorld) -> None:
    make_eip(50, tags={"eipdash/pool": "someone-else"})
    Node.objects.filter(name="node-b").update(labels=web_world.spec.labels)  # node-b waits for 203.0.113.2
    planned = store_plan_as_a_pass(web_world.spec)  # what the spec's pass stores; the page only reads it
    html = viewer_client.get(reverse("launch-spec-detail", args=["egress"])).content.decode()
    assert "eipdash/pool=egress" in html and "eks.amazonaws.com/nodegroup=egress" in html
    assert "203.0.113.1" in html and "203.0.113.2" in html and "203.0.113.50" not in html
    assert "node-a" in html and "node-b" in html
    assert "Plan of the last pass" in html and 'id="plan-age"' in html
    assert "assign 203.0.113.2 → node-b" in planned.describe()
    assert all(f'<li class="mono">{line}</li>' in html for line in planned.describe())
    assert "taint_lifted" in html


BASH = shutil.which("bash")


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_user_data_is_valid_bash_with_taint_and_imdsv2(viewer_client: Client, web_world: WebWorld, tmp_path) -> None:
    # A label value with shell metacharacters must not break out of its quotes.
    web_world.spec.labels = {"eks.amazonaws.com/nodegroup": "egress", "team": "a'b"}
    web_world.spec.save()
    response = viewer_client.get(reverse("launch-spec-user-data", args=["egress"]))
    script = response.content.decode()
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    check = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "--register-with-taints=${EIPDASH_TAINT}" in script
    assert "EIPDASH_TAINT=eipdash.io/eip-pending=true:NoSchedule" in script
    assert "X-aws-ec2-metadata-token-ttl-seconds" in script and "-X PUT" in script
    assert "latest/meta-data/public-ipv4" in script
    # The pool's live EIPs only: eip 3 is gone.
    assert "EIPDASH_POOL_IPS=(203.0.113.1 203.0.113.2)" in script
    # The same snippet is on the page, HTML-escaped.
    page = viewer_client.get(reverse("launch-spec-detail", args=["egress"])).content.decode()
    assert "register-with-taints" in page


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_user_data_runs_and_accepts_a_pool_ip(viewer_client: Client, web_world: WebWorld, tmp_path) -> None:
    """Run the health check with curl stubbed as IMDS: it must succeed on a pool IP and fail on another."""
    script = viewer_client.get(reverse("launch-spec-user-data", args=["egress"])).content.decode()
    # Keep the functions and the pool, drop bootstrap and the final call.
    head, _, _ = script.partition("# 1. Register")
    functions = script[script.index("eipdash_public_ipv4() {") : script.rindex("eipdash_wait_for_pool_eip\n")]
    for public_ip, expected in (("203.0.113.2", 0), ("198.51.100.7", 1)):
        stub = tmp_path / "curl"
        stub.write_text(
            f'#!/bin/bash\nfor a in "$@"; do [ "$a" = PUT ] && {{ echo token; exit 0; }}; done\necho {public_ip}\n'
        )
        stub.chmod(0o755)
        test_script = (
            head
            + functions.replace("touch /run/eipdash-eip-ready", "true").replace("sleep 5", "sleep 0")
            + ("EIPDASH_WAIT_SECONDS=1\neipdash_wait_for_pool_eip\n")
        )
        run = subprocess.run(
            [BASH, "-c", test_script],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
            env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        )
        assert run.returncode == expected, run.stdout + run.stderr


def test_the_form_reports_every_problem_at_once(operator_client: Client, web_world: WebWorld) -> None:
    response = operator_client.post(reverse("launch-spec-create"),
                                    _form(name="-bad", tag_key="aws:reserved", labels="bad key!=x", region="us-west-2"))
    html = response.content.decode()
    assert response.status_code == 400
    for message in ("name is required", "must not start with &#x27;aws:&#x27;", "label key",
                    "us-west-2 is the region of no cluster"):
        assert message in html, message


def test_the_form_offers_only_regions_of_known_clusters(operator_client: Client, web_world: WebWorld) -> None:
    html = operator_client.get(reverse("launch-spec-create")).content.decode()
    assert '<option value="us-east-1"' in html and '<option value="eu-west-1"' not in html
    assert '<option value="prod"' in html


def test_disable_and_drain_then_delete(operator_client: Client, web_world: WebWorld) -> None:
    spec = web_world.spec
    page = operator_client.get(reverse("launch-spec-detail", args=[spec.name])).content.decode()
    assert 'id="disable-spec"' in page and "keeps its EIP while it" in page
    # It holds an EIP: deletion is refused with the CLI's rule, and nothing is deleted.
    confirm = operator_client.get(reverse("launch-spec-delete", args=[spec.name])).content.decode()
    assert 'id="delete-blocked"' in confirm and 'id="delete-confirm"' not in confirm
    response = operator_client.post(reverse("launch-spec-delete", args=[spec.name]))
    assert response.status_code == 409 and "still holds 1 EIP" in response.content.decode()
    assert LaunchSpec.objects.filter(pk=spec.pk).exists()
    # Disable and drain.
    response = operator_client.post(reverse("launch-spec-disable", args=[spec.name]))
    assert response.status_code == 302
    assert LaunchSpec.objects.get(pk=spec.pk).enabled is False
    # Drained (its claims closed): now it can be deleted.
    from django.utils import timezone

    from pools.models import Assignment

    Assignment.objects.filter(launch_spec=spec).update(closed_at=timezone.now())
    # Holding nothing, but node-b still waits under the startup taint: refused, nothing would ever lift it.
    confirm = operator_client.get(reverse("launch-spec-delete", args=[spec.name])).content.decode()
    assert 'id="delete-blocked"' in confirm and "still waiting under the startup taint" in confirm
    assert 'id="delete-confirm"' not in confirm
    response = operator_client.post(reverse("launch-spec-delete", args=[spec.name]))
    assert response.status_code == 409 and LaunchSpec.objects.filter(pk=spec.pk).exists()
    from pools.models import Node

    Node.objects.filter(launch_spec=spec, startup_tainted=True).update(state=Node.State.GONE)
    confirm = operator_client.get(reverse("launch-spec-delete", args=[spec.name])).content.decode()
    assert "The history of" in confirm
    response = operator_client.post(reverse("launch-spec-delete", args=[spec.name]))
    assert response.status_code == 302 and not LaunchSpec.objects.filter(pk=spec.pk).exists()


def test_viewer_cannot_disable_or_delete(viewer_client: Client, web_world: WebWorld) -> None:
    assert viewer_client.post(reverse("launch-spec-disable", args=["egress"])).status_code == 403
    assert viewer_client.post(reverse("launch-spec-delete", args=["egress"])).status_code == 403
    assert LaunchSpec.objects.get(name="egress").enabled is True


def test_an_import_that_overwrites_shows_the_diff_first(operator_client: Client, web_world: WebWorld) -> None:
    document = launch_spec_to_ocean(web_world.spec)
    document["launchSpec"]["elasticIpPool"]["tagSelector"]["tagValue"] = "egress-v2"
    response = operator_client.post(reverse("launch-spec-import"), {"document": json.dumps(document)})
    html = response.content.decode()
    assert response.status_code == 200 and 'id="import-diff"' in html
    assert '-        &quot;tagValue&quot;: &quot;egress&quot;' in html
    assert '+        &quot;tagValue&quot;: &quot;egress-v2&quot;' in html
    assert LaunchSpec.objects.get(name="egress").tag_value == "egress"  # nothing changed yet
    response = operator_client.post(reverse("launch-spec-import"),
                                    {"document": json.dumps(document), "confirm": "overwrite"})
    assert response.status_code == 302
    assert LaunchSpec.objects.get(name="egress").tag_value == "egress-v2"


def test_the_plan_of_a_disabled_spec_says_it_only_drains(operator_client: Client, web_world: WebWorld) -> None:
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(enabled=False)
    html = operator_client.get(reverse("launch-spec-detail", args=[web_world.spec.name])).content.decode()
    assert 'id="plan-disabled"' in html and "the next pass only drains" in html


def test_deleting_needs_the_delete_permission_not_only_change(operator: object, client: Client,
                                                              web_world: WebWorld) -> None:
    """Deleting has its own permission (operators get it from a migration); editing alone is not enough."""
    from django.contrib.auth.models import Group, Permission, User

    editor = User.objects.create_user("eddie-editor", password="x-very-long-password")
    editor.groups.add(Group.objects.get(name="viewers"))
    editor.user_permissions.add(Permission.objects.get(codename="change_launchspec"))
    client.force_login(editor)
    spec = web_world.spec
    from django.utils import timezone

    from pools.models import Assignment

    Assignment.objects.filter(launch_spec=spec).update(closed_at=timezone.now())
    page = client.get(reverse("launch-spec-detail", args=[spec.name])).content.decode()
    assert 'id="disable-spec"' in page and 'id="delete-spec"' not in page
    assert client.post(reverse("launch-spec-delete", args=[spec.name])).status_code == 403
    assert LaunchSpec.objects.filter(pk=spec.pk).exists()
    assert Group.objects.get(name="operators").permissions.filter(codename="delete_launchspec").exists()


@pytest.mark.django_db
def test_the_groups_put_back_after_a_flush_have_every_permission_the_migrations_grant() -> None:
    """A transactional test flushes the migrations' groups; the persona fixtures put them back, and a later
    test on the same worker must find every permission the migrations granted (0010's delete included)."""
    from django.contrib.auth.models import Group

    import pools.migrations
    from tests.fixtures.web import GROUP_MIGRATIONS, _user

    # The fixtures' list names every migration that touches the groups, so a later one is not forgotten.
    migrations = Path(pools.migrations.__file__).parent
    touching = {path.stem for path in migrations.glob("0*.py") if '"auth", "Group"' in path.read_text()}
    assert touching == {module.rsplit(".", 1)[1] for module, _ in GROUP_MIGRATIONS}

    Group.objects.all().delete()  # what a flush leaves
    _user("someone", "operators")
    operators = set(Group.objects.get(name="operators").permissions.values_list("codename", flat=True))
    viewers = set(Group.objects.get(name="viewers").permissions.values_list("codename", flat=True))
    assert {"change_launchspec", "delete_launchspec"} <= operators
    assert viewers < operators and "delete_launchspec" not in viewers


def test_the_spec_page_says_a_disabled_spec_is_draining(world: World, viewer_client: Client) -> None:
    spec = world.spec()
    world.eips(1)
    world.node("a")
    reconcile(spec)
    LaunchSpec.objects.filter(pk=spec.pk).update(enabled=False)
    url = reverse("launch-spec-detail", args=[spec.name])
    page = viewer_client.get(url).content.decode()
    assert "Draining." in page and "assigns no new EIP" in page
    world.cordon("a")
    reconcile(spec)
    page = viewer_client.get(url).content.decode()
    assert "Drained." in page


def test_every_change_through_the_pages_is_an_event_with_its_user(
    operator_client: Client, operator: User, web_world: WebWorld
) -> None:
    """Who widened this pool's selector, and when: the form, Disable and drain, the import and Delete each leave
    their event, with the operator as actor; a refused change leaves none."""
    assert operator_client.post(reverse("launch-spec-create"), _form()).status_code == 302
    assert operator_client.post(reverse("launch-spec-edit", args=["ingress"]), _form(tag_value="")).status_code == 302
    refused = operator_client.post(reverse("launch-spec-edit", args=["ingress"]), _form(region="eu-west-1"))
    assert refused.status_code == 400
    assert operator_client.post(reverse("launch-spec-disable", args=["ingress"])).status_code == 302
    imported = {"document": json.dumps(OCEAN), "confirm": "overwrite"}
    assert operator_client.post(reverse("launch-spec-import"), imported).status_code == 302
    assert operator_client.post(reverse("launch-spec-delete", args=["ingress"])).status_code == 302

    events = list(Event.objects.filter(launch_spec="ingress").order_by("id"))
    assert {event.actor for event in events} == {operator.username}
    assert {(event.cluster, event.region) for event in events} == {("prod", "us-east-1")}
    assert [(event.kind, event.reason) for event in events] == [
        ("spec_created", "created: cluster 'prod', labels 'eks.amazonaws.com/nodegroup=ingress,team=edge', pool "
                         "'eipdash/pool=ingress', enabled"),
        ("spec_updated", "tagValue 'ingress' -> None"),
        ("spec_disabled", "disabled: its nodes drain, no new EIP"),
        ("spec_updated", "labels 'eks.amazonaws.com/nodegroup=ingress,team=edge' -> "
                         "'eks.amazonaws.com/nodegroup=ingress', tagValue None -> 'ingress'"),
        ("spec_enabled", "enabled: its nodes get EIPs again"),
        ("spec_deleted", "deleted: it held no EIP"),
    ]


def test_launch_spec_disable_asks_first(operator_client: Client, web_world: WebWorld) -> None:
    spec = web_world.spec
    detail, disable = reverse("launch-spec-detail", args=[spec.name]), reverse("launch-spec-disable", args=[spec.name])
    page = operator_client.get(detail).content.decode()
    # The button on the page only asks: the one form that posts to the action is inside the confirmation.
    trigger = page.split('id="disable-spec"')[0].rsplit("<form", 1)[1]
    assert 'method="get"' in trigger and disable not in trigger
    dialog = page.split('id="confirm-disable"')[1].split("</dialog>")[0]
    assert page.count(f'action="{disable}"') == 1 and f'action="{disable}"' in dialog
    assert "Disable egress and drain it?" in dialog and "1 EIP" in dialog and 'id="disable-spec-confirm"' in dialog
    assert "autofocus" in dialog.split('id="disable-cancel"')[1].split(">")[0]
    # Without JavaScript the button's GET shows the same confirmation, open in the page.
    asked = operator_client.get(detail, {"confirm": "disable"}).content.decode()
    assert '<dialog open id="confirm-disable"' in asked
    # The action itself still refuses a GET: only the confirmation's POST disables.
    assert operator_client.get(disable).status_code == 405
    assert LaunchSpec.objects.get(pk=spec.pk).enabled is True


def test_import_diff_says_which_eips_the_new_selector_takes_and_lets_go(operator_client: Client,
                                                                        web_world: WebWorld) -> None:
    from django.utils import timezone

    from pools.models import UnmanagedAddress

    UnmanagedAddress.objects.create(allocation_id="eipalloc-bastion", region="us-east-1", public_ip="198.51.100.9",
                                    tags={"eipdash/pool": "egress-2"}, association_id="eipassoc-b",
                                    instance_id="i-0bastion", last_seen_at=timezone.now())
    document = launch_spec_to_ocean(web_world.spec)
    document["launchSpec"]["elasticIpPool"]["tagSelector"]["tagValue"] = "egress-2"
    response = operator_client.post(reverse("launch-spec-import"), {"document": json.dumps(document)})
    html = response.content.decode()
    assert response.status_code == 200 and 'id="import-diff"' in html
    diff = html.split('<pre class="code diff">')[1].split("</pre>")[0]
    one, two = web_world.eips[0], web_world.eips[1]
    assert diff.splitlines()[-3:] == [
        "+ pool takes 198.51.100.9 (eipalloc-bastion), now unmanaged, attached to i-0bastion",
        f"- pool lets go of {one.public_ip} ({one.allocation_id}), now on node node-a",
        f"- pool lets go of {two.public_ip} ({two.allocation_id}), now free",
    ]
    assert LaunchSpec.objects.get(name="egress").tag_value == "egress"  # said before it is applied


def test_disable_and_drain_stops_a_spec_whose_old_row_no_longer_validates(
    operator_client: Client, operator: User, web_world: WebWorld
) -> None:
    """Re-validating the whole row refused to disable a spec holding a value today's rules refuse (an old row with
    a bidi mark): on call, the switch must flip whatever else the row holds."""
    LaunchSpec.objects.filter(name="egress").update(tag_value="egress\u202e")
    assert operator_client.post(reverse("launch-spec-disable", args=["egress"])).status_code == 302
    spec = LaunchSpec.objects.get(name="egress")
    assert spec.enabled is False and spec.tag_value == "egress\u202e"
    (event,) = Event.objects.filter(kind="spec_disabled")
    assert event.actor == operator.username


def test_import_of_a_new_spec_says_which_eips_its_pool_would_take_before_it_is_made(
    operator_client: Client, web_world: WebWorld
) -> None:
    """A new spec was created at once: its pool took an unmanaged EIP (a bastion's) without a word first."""
    from django.utils import timezone

    from pools.models import UnmanagedAddress

    UnmanagedAddress.objects.create(allocation_id="eipalloc-bastion", region="us-east-1", public_ip="198.51.100.9",
                                    tags={"eipdash/pool": "ingress"}, association_id="eipassoc-b",
                                    instance_id="i-0bastion", last_seen_at=timezone.now())
    response = operator_client.post(reverse("launch-spec-import"), {"document": json.dumps(OCEAN)})
    html = response.content.decode()
    assert response.status_code == 200 and "ingress is new: its pool would take these EIPs." in html
    assert "+ pool takes 198.51.100.9 (eipalloc-bastion), now unmanaged, attached to i-0bastion" in html
    assert not LaunchSpec.objects.filter(name="ingress").exists()  # said before it is made
    confirmed = operator_client.post(reverse("launch-spec-import"),
                                     {"document": json.dumps(OCEAN), "confirm": "overwrite"})
    assert confirmed.status_code == 302 and LaunchSpec.objects.filter(name="ingress").exists()
