"""Security review (issue 7, and issue 8 items 15-16), web and input side: each test failed on the old code.

- the user-data snippet: HTML-escaped on the page, every value an inert shell word in the script;
- control characters, `$` instead of fullmatch, column sizes, JSON types and depth, invalid UTF-8 and
  reserved names are refused on every path (CLI, form, import), with 400 / exit 2 and a message;
- clusters: an unknown name is refused, only superusers add them, two rows on one kube context refused;
- the admin writes only clusters, users and groups;
- history filters at the calendar's edge are a form error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from pools.models import Cluster, LaunchSpec
from pools.specfile import SpecFileError, parse_launch_spec
from tests.fixtures.web import PASSWORD, WebWorld

BASH = shutil.which("bash")

GOOD: dict[str, Any] = {
    "name": "ingress",
    "labels": [{"key": "eipdash.io/pool", "value": "ingress"}],
    "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}},
}

# Each refused in every name, tag key/value, label key/value and cluster name.
CONTROLS = ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u202e", "\u2066", "\u2028"]


def _spec(**changes: Any) -> dict[str, Any]:
    return {"launchSpec": {**GOOD, **changes}}


def _with_value(field: str, value: str) -> dict[str, Any]:
    if field == "name":
        return _spec(name=f"in{value}gress")
    if field == "cluster":
        return _spec(cluster=f"de{value}fault")
    if field == "tagKey":
        return _spec(elasticIpPool={"tagSelector": {"tagKey": f"eipdash{value}pool"}})
    if field == "tagValue":
        return _spec(elasticIpPool={"tagSelector": {"tagKey": "eipdash/pool", "tagValue": f"in{value}gress"}})
    if field == "labelKey":
        return _spec(labels=[{"key": f"tier{value}x", "value": "edge"}])
    return _spec(labels=[{"key": "tier", "value": f"ed{value}ge"}])


FIELDS = ["name", "cluster", "tagKey", "tagValue", "labelKey", "labelValue"]


def _apply_file(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "spec.json"
    path.write_bytes(raw)
    out = StringIO()
    call_command("launchspec", "apply", "-f", str(path), stdout=out)
    return out.getvalue()


def _refused_by_cli(tmp_path: Path, raw: bytes) -> str:
    with pytest.raises(CommandError) as info:
        _apply_file(tmp_path, raw)
    assert info.value.returncode == 2
    message = str(info.value)
    assert "Traceback" not in message
    return message


# --- 1. the user-data snippet ---------------------------------------------------------------------


HOSTILE_TAG = "x'\"</code></pre><script>document.title='pwned'</script>"


def test_the_spec_page_escapes_a_hostile_tag_value_in_the_snippet(viewer_client: Client, web_world: WebWorld):
    # Written as a row: what an old spec, or one that went around validation, holds.
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(tag_value=HOSTILE_TAG)
    page = viewer_client.get(reverse("launch-spec-detail", args=["egress"])).content.decode()
    snippet = page[page.index('id="user-data"') : page.index("</section>", page.index('id="user-data"'))]
    assert "<script>" not in snippet
    assert "&lt;script&gt;document.title=" in snippet


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_hostile_values_stay_inert_data_when_the_snippet_runs(
    viewer_client: Client, web_world: WebWorld, tmp_path: Path
) -> None:
    """A newline in a comment or a value must not become a command of the root script, nor a line of
    /etc/default/kubelet."""
    marker = tmp_path / "pwned"
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(
        tag_value=f"egress\ntouch {marker}\n",
        labels={"eks.amazonaws.com/nodegroup": f"egress\ntouch {marker}-label", "team": "a'b $(id) `id`"},
    )
    script = viewer_client.get(reverse("launch-spec-user-data", args=["egress"])).content.decode()
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    check = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr

    # Run everything up to the health check, with bootstrap.sh absent and kubelet's env file in tmp_path.
    kubelet_env = tmp_path / "kubelet"
    head = script[: script.index("# 2. Health check")]
    head = head.replace("/etc/default/kubelet", str(kubelet_env)).replace("/etc/eks/bootstrap.sh", "/nonexistent")
    run = subprocess.run(
        [BASH, "-c", head + 'printf "%s\\n" "$EIPDASH_NODE_LABELS"\n'],
        capture_output=True, text=True, check=False, timeout=20, env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert not marker.exists() and not Path(f"{marker}-label").exists()
    # One KEY=VALUE line: the newline is spelled out, not written.
    assert len(kubelet_env.read_text().splitlines()) == 1
    assert run.stdout == f"eks.amazonaws.com/nodegroup=egress\\u000atouch {marker}-label,team=a'b $(id) `id`\n"


# --- 1 and 6. validation on every path ------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_control_and_bidi_characters_are_refused_by_the_parser(field: str, char: str) -> None:
    with pytest.raises(SpecFileError):
        parse_launch_spec(_with_value(field, char))


@pytest.mark.django_db
@pytest.mark.parametrize("field", FIELDS)
def test_the_cli_refuses_a_newline_in_every_field(tmp_path: Path, field: str) -> None:
    _refused_by_cli(tmp_path, json.dumps(_with_value(field, "\n")).encode())
    assert not LaunchSpec.objects.exists()


@pytest.mark.django_db
def test_a_trailing_newline_no_longer_makes_a_second_spec(tmp_path: Path) -> None:
    _apply_file(tmp_path, json.dumps(_spec(name="egress-web")).encode())
    message = _refused_by_cli(tmp_path, json.dumps(_spec(name="egress-web\n")).encode())
    assert "name" in message
    assert list(LaunchSpec.objects.values_list("name", flat=True)) == ["egress-web"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (_spec(region=[]), "not a known AWS region"),
        (_spec(region={"a": 1}), "not a known AWS region"),
        (_spec(name=["x"]), "name is required"),
        (_spec(labels="tier=edge"), "labels must list"),
        (_spec(elasticIpPool={"tagSelector": {"tagKey": ["k"]}}), "tagKey must be a string"),
        (_spec(cluster="c" * 101), "cluster must be a name of 1-100"),
        (_spec(name="new"), "reserved"),
        (_spec(name="import"), "reserved"),
    ],
)
def test_wrong_types_sizes_and_reserved_names_exit_2_with_a_message(
    tmp_path: Path, document: dict[str, Any], expected: str
) -> None:
    assert expected in _refused_by_cli(tmp_path, json.dumps(document).encode())
    assert not LaunchSpec.objects.exists() and not Cluster.objects.exclude(name="default").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (json.dumps(_spec(extra=json.loads("[" * 25 + "1" + "]" * 25))).encode(), "nested deeper"),
        (b'{"launchSpec": {"name": "caf\xe9"}}', "not UTF-8"),
        (b'{"launchSpec": {"enabled": ' + b"1" * 5000 + b"}}", "number is too long"),
    ],
    ids=["recursion", "depth", "utf8", "huge-number"],
)
def test_deep_json_and_invalid_utf8_exit_2_with_one_line(tmp_path: Path, raw: bytes, expected: str) -> None:
    message = _refused_by_cli(tmp_path, raw)
    assert expected in message and "\n" not in message


def test_the_web_form_refuses_control_characters_with_400(operator_client: Client, web_world: WebWorld) -> None:
    form = {
        "name": "ingress", "cluster": "prod", "region": "", "labels": "tier=edge", "tag_key": "eipdash/pool",
        "tag_value": "in\u202egress", "enabled": "on",
    }
    response = operator_client.post(reverse("launch-spec-create"), form)
    assert response.status_code == 400 and "control, bidi" in response.content.decode()
    assert not LaunchSpec.objects.filter(name="ingress").exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (json.dumps(_spec(region=[], cluster="prod")).encode(), "not a known AWS region"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"launchSpec": {"name": "caf\xe9"}}', "not UTF-8"),
        (json.dumps(_spec(cluster="prod", elasticIpPool={"tagSelector": {"tagKey": "k\x00"}})).encode(), "control"),
        (json.dumps(_spec(name="new", cluster="prod")).encode(), "reserved"),
    ],
    ids=["types", "depth", "utf8", "nul", "reserved"],
)
def test_the_import_page_answers_400_with_a_message(
    operator_client: Client, web_world: WebWorld, raw: bytes, expected: str
) -> None:
    upload = SimpleUploadedFile("spec.json", raw, content_type="application/json")
    response = operator_client.post(reverse("launch-spec-import"), {"file": upload})
    assert response.status_code == 400 and expected in response.content.decode()
    assert LaunchSpec.objects.count() == 1


# --- 4. clusters ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_mistyped_cluster_is_refused_not_created(tmp_path: Path) -> None:
    call_command("cluster", "add", "prod-eu", "--region", "eu-west-1", "--kube-context", "eu", stdout=StringIO())
    message = _refused_by_cli(tmp_path, json.dumps(_spec(cluster="prod-ue")).encode())
    assert "unknown cluster 'prod-ue'" in message and "prod-eu" in message
    assert not Cluster.objects.filter(name="prod-ue").exists() and not LaunchSpec.objects.exists()
    # The configured default cluster still works, by name or by omission.
    assert "cluster default" in _apply_file(tmp_path, json.dumps(_spec(cluster="default")).encode())


@pytest.mark.django_db
def test_two_clusters_on_one_kube_context_are_refused() -> None:
    call_command("cluster", "add", "prod", "--region", "us-east-1", "--kube-context", "ctx", stdout=StringIO())
    with pytest.raises(CommandError) as info:
        call_command("cluster", "add", "prod2", "--region", "us-east-1", "--kube-context", "ctx", stdout=StringIO())
    assert info.value.returncode == 2 and "already uses kube context 'ctx'" in str(info.value)
    # Rows that share a context from before the rule are flagged.
    Cluster.objects.create(name="legacy", region="us-east-1", kube_context="ctx")
    out = StringIO()
    call_command("cluster", "list", stdout=out)
    assert out.getvalue().count("OVERLAP") == 2


@pytest.mark.django_db
def test_the_default_cluster_is_not_made_on_a_context_another_row_manages(tmp_path: Path) -> None:
    call_command("cluster", "add", "prod", "--region", "us-east-1", stdout=StringIO())  # the current context
    message = _refused_by_cli(tmp_path, json.dumps(_spec()).encode())
    assert "same kube context as cluster 'prod'" in message
    assert list(Cluster.objects.values_list("name", flat=True)) == ["prod"]
    assert "cluster prod" in _apply_file(tmp_path, json.dumps(_spec(cluster="prod")).encode())


@pytest.fixture
def superuser_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("sam-super", password=PASSWORD))
    return client


def test_only_superusers_add_clusters_in_the_admin(superuser_client: Client, operator: User) -> None:
    operator.is_staff = True
    operator.save()
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["add_cluster", "view_cluster"]))
    staff = Client()
    staff.force_login(operator)
    add = reverse("admin:pools_cluster_add")
    data = {"name": "prod", "region": "us-east-1", "kube_context": "prod"}
    assert staff.post(add, data).status_code == 403
    assert not Cluster.objects.exists()
    assert superuser_client.post(add, data).status_code == 302
    # A second row on the same context, or a name with a newline, is refused by the admin form.
    response = superuser_client.post(add, {"name": "prod2", "region": "us-east-1", "kube_context": "prod"})
    assert response.status_code == 200 and "already uses kube context" in response.content.decode()
    response = superuser_client.post(add, {"name": "x\ny", "region": "us-east-1", "kube_context": "other"})
    assert response.status_code == 200 and list(Cluster.objects.values_list("name", flat=True)) == ["prod"]


# --- issue 8 item 15: the admin bypassed every rule -----------------------------------------------


def test_the_admin_cannot_create_or_delete_launch_specs(superuser_client: Client, web_world: WebWorld) -> None:
    spec = web_world.spec  # holds an EIP (web_world assigns one)
    assert superuser_client.get(reverse("admin:pools_launchspec_add")).status_code == 403
    bad = {"name": "bad name", "cluster": web_world.cluster.pk, "labels": "{}", "tag_key": "aws:x"}
    assert superuser_client.post(reverse("admin:pools_launchspec_add"), bad).status_code == 403
    delete = reverse("admin:pools_launchspec_delete", args=[spec.pk])
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [spec.pk], "post": "yes"}
    superuser_client.post(reverse("admin:pools_launchspec_changelist"), bulk)
    assert LaunchSpec.objects.filter(pk=spec.pk).exists()
    # Still readable.
    assert superuser_client.get(reverse("admin:pools_launchspec_change", args=[spec.pk])).status_code == 200


# --- 7. history at the calendar's edge ------------------------------------------------------------


@pytest.mark.parametrize("edge", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("field", ["since", "until"])
def test_history_dates_at_the_edge_are_a_form_error(
    viewer_client: Client, web_world: WebWorld, edge: str, field: str
) -> None:
    page = viewer_client.get(reverse("history"), {field: edge})
    assert page.status_code == 400 and "out of range" in page.content.decode()
    for name in ("history-export-csv", "history-export-jsonl"):
        assert viewer_client.get(reverse(name), {field: edge}).status_code == 400


def test_history_since_after_until_is_a_form_error(viewer_client: Client, web_world: WebWorld) -> None:
    response = viewer_client.get(reverse("history"), {"since": "2026-01-02T00:00:00", "until": "2026-01-01T00:00:00"})
    assert response.status_code == 400 and "must not be before" in response.content.decode()


def test_a_cursor_at_the_edge_gives_the_first_page(viewer_client: Client, web_world: WebWorld) -> None:
    for cursor in ("9999-12-31T23:59:59-14:00_5", f"2026-01-01T00:00:00+00:00_{2**70}"):
        assert viewer_client.get(reverse("history"), {"before": cursor}).status_code == 200


def test_the_snippet_download_is_not_html(viewer_client: Client, web_world: WebWorld) -> None:
    response = viewer_client.get(reverse("launch-spec-user-data", args=["egress"]))
    assert response["Content-Type"].startswith("text/x-shellscript")
    assert BytesIO(response.content).read(11) == b"#!/bin/bash"


@pytest.mark.parametrize("download", ["launch-spec-user-data", "launch-spec-export"])
def test_a_legacy_hostile_name_cannot_break_the_download_header(
    viewer_client: Client, web_world: WebWorld, download: str
) -> None:
    hostile = 'eg"ress\r\nX-Evil: 1'
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(name=hostile)
    response = viewer_client.get(reverse(download, args=[hostile]))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="eg_ress__X-Evil__1')
    assert not response.has_header("X-Evil")
