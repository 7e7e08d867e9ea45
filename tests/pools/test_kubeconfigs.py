"""Issue 19 item 7: the kubeconfig file a cluster row names, as the admin form and `manage.py cluster add`
check it when the row is saved: only under EIPDASH_KUBECONFIG_DIR (resolved, and refused in the same words
whether a path outside exists or not), a kubeconfig the client can load, and no credential plugin that would
run a command on the workers."""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings

from pools.admin import ClusterForm
from pools.models import Cluster

pytestmark = pytest.mark.django_db

SECRET = "s3cret-token-value"
EXEC = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
        "args": ["eks", "get-token", "--cluster-name", "prod"]}


@pytest.fixture
def kube_dir(tmp_path: Path, settings: Settings) -> Path:
    directory = tmp_path / "kubeconfigs"
    directory.mkdir()
    settings.EIPDASH_KUBECONFIG_DIR = str(directory)
    return directory


def write(path: Path, *, user: dict[str, Any] | None = None, current: str | None = "main",
          contexts: tuple[str, ...] = ("main",)) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": SECRET}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u"}} for name in contexts],
    }
    if current is not None:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path


def add(path: str | Path, *, context: str = "", name: str = "eu") -> str:
    """`manage.py cluster add`: its output, or its refusal (exit code 2) as the message."""
    out = StringIO()
    try:
        call_command("cluster", "add", name, "--region", "eu-west-1", "--kubeconfig", str(path),
                     "--context", context, stdout=out)
    except CommandError as exc:
        assert exc.returncode == 2
        return str(exc)
    return out.getvalue()


def form_errors(path: str | Path, *, context: str = "", name: str = "eu") -> list[str]:
    """The admin form's answer: its errors, or [] once the row is saved."""
    form = ClusterForm(data={"name": name, "region": "eu-west-1", "kube_context": context, "kubeconfig": str(path)})
    if form.is_valid():
        form.save()
        return []
    return [message for messages in form.errors.values() for message in messages]


def outside(path: str | Path, directory: Path) -> str:
    return f"kubeconfig {str(path)!r} is not a file under EIPDASH_KUBECONFIG_DIR ({directory})"


def test_a_path_outside_the_directory_is_refused_in_the_same_words_whether_it_exists_or_not(
    kube_dir: Path, tmp_path: Path,
) -> None:
    elsewhere = write(tmp_path / "elsewhere")  # a valid kubeconfig, but not in the directory
    for path in ("/etc/shadow", "/proc/self/environ", "/etc/passwd", str(elsewhere), str(tmp_path / "missing"),
                 "/nonexistent/kubeconfig", str(kube_dir)):
        assert add(path) == f"refused: {outside(path, kube_dir)}", path
        assert form_errors(path, name="eu2") == [outside(path, kube_dir)], path
    assert not Cluster.objects.exists()


def test_a_symlink_or_dotdot_inside_the_directory_that_leads_outside_is_refused(kube_dir: Path, tmp_path: Path) -> None:
    elsewhere = write(tmp_path / "elsewhere")
    link = kube_dir / "prod-eu"
    link.symlink_to(elsewhere)
    (kube_dir / "shadow").symlink_to("/etc/shadow")
    (kube_dir / "sub").mkdir()
    for path in (link, kube_dir / "shadow", f"{kube_dir}/../elsewhere", f"{kube_dir}/sub/../../elsewhere",
                 f"{kube_dir}/nope/../../elsewhere"):
        # The command stores (and so names) the path made absolute, its ".." folded; the form, as given.
        assert add(path) == f"refused: {outside(os.path.abspath(path), kube_dir)}", path
        assert form_errors(path) == [outside(path, kube_dir)], path
    assert not Cluster.objects.exists()
    # Links that stay inside are fine: a mounted Secret's files are symlinks into its ..data directory.
    data = kube_dir / "..data"
    data.mkdir()
    write(data / "config")
    (kube_dir / "config").symlink_to("..data/config")
    assert "added cluster eu" in add(kube_dir / "config")


def test_kubeconfig_files_are_turned_off_when_the_directory_is_empty(settings: Settings, tmp_path: Path) -> None:
    settings.EIPDASH_KUBECONFIG_DIR = ""
    path = write(tmp_path / "kubeconfig")
    message = add(path)
    assert message.startswith("refused: kubeconfig files are turned off (EIPDASH_KUBECONFIG_DIR is empty)")
    assert form_errors(path) == [message.removeprefix("refused: ")]
    # A cluster of a context of the workers' own kubeconfig needs no file.
    assert "added cluster eu" in add("", context="prod-eu")


def test_a_file_that_is_not_a_kubeconfig_is_refused_without_quoting_it(kube_dir: Path) -> None:
    broken = kube_dir / "broken"
    broken.write_text(f"clusters:\n  - name: c\n    token: {SECRET}\n   : [\n")
    listed = kube_dir / "listed"
    listed.write_text("- a\n- b\n")
    wrong_types = kube_dir / "wrong-types"
    wrong_types.write_text(yaml.safe_dump({"current-context": "main", "contexts": [5], "users": "u"}))
    empty = kube_dir / "empty"
    empty.write_text("")
    cases = {
        broken: f"kubeconfig {str(broken)!r} is not valid YAML at line 4, column 4",
        listed: f"kubeconfig {str(listed)!r} is not a kubeconfig (a YAML mapping with clusters, contexts and users)",
        wrong_types: (f"kubeconfig {str(wrong_types)!r}: contexts[0] must be a mapping with a name; "
                      f"kubeconfig {str(wrong_types)!r}: users must be a list"),
        empty: f"kubeconfig {str(empty)!r} is not a kubeconfig (a YAML mapping with clusters, contexts and users)",
    }
    for path, expected in cases.items():
        assert add(path) == f"refused: {expected}"
        assert form_errors(path) == [expected]
    assert SECRET not in add(broken)
    assert not Cluster.objects.exists()


def test_the_context_the_row_selects_must_be_in_the_file(kube_dir: Path) -> None:
    path = write(kube_dir / "prod", contexts=("main", "prod-eu"))
    assert add(path, context="prod-us") == f"refused: kubeconfig {str(path)!r} has no context 'prod-us' (it has: " \
                                           "'main', 'prod-eu')"
    assert form_errors(path, context="prod-us") == [
        f"kubeconfig {str(path)!r} has no context 'prod-us' (it has: 'main', 'prod-eu')"]
    no_current = write(kube_dir / "no-current", current=None)
    assert add(no_current) == (f"refused: kubeconfig {str(no_current)!r} has no current-context: give the cluster "
                               "a kube context")
    assert not Cluster.objects.exists()
    assert "added cluster eu" in add(no_current, context="main")
    assert form_errors(path, context="prod-eu", name="eu2") == []


def test_an_exec_plugin_is_refused_unless_the_setting_allows_it(kube_dir: Path, settings: Settings) -> None:
    path = write(kube_dir / "eks", user={"exec": EXEC})
    expected = (f"kubeconfig {str(path)!r}: user 'u' runs a command for its credentials (an exec plugin), "
                "refused unless EIPDASH_KUBECONFIG_ALLOW_EXEC is true")
    assert add(path) == f"refused: {expected}"
    assert form_errors(path) == [expected]
    assert not Cluster.objects.exists()
    settings.EIPDASH_KUBECONFIG_ALLOW_EXEC = True
    assert "added cluster eu" in add(path)
    assert form_errors(path, context="main", name="eu2") == []


def test_an_auth_provider_is_refused_even_with_exec_allowed(kube_dir: Path, settings: Settings) -> None:
    settings.EIPDASH_KUBECONFIG_ALLOW_EXEC = True
    path = write(kube_dir / "gke", user={"auth-provider": {"name": "gcp", "config": {"cmd-path": "/usr/bin/gcloud"}}})
    expected = (f"kubeconfig {str(path)!r}: user 'u' uses an auth-provider, which is refused: use a token, a client "
                "certificate or an exec plugin")
    assert add(path) == f"refused: {expected}"
    assert form_errors(path) == [expected]
    assert not Cluster.objects.exists()


def test_a_valid_kubeconfig_inside_the_directory_is_accepted(kube_dir: Path) -> None:
    path = write(kube_dir / "prod-eu.kubeconfig", contexts=("main", "prod-eu"))
    assert f"added cluster eu (eu-west-1, context prod-eu, kubeconfig {path})" in add(path, context="prod-eu")
    assert form_errors(path, name="eu-main") == []
    assert dict(Cluster.objects.values_list("name", "kubeconfig")) == {"eu": str(path), "eu-main": str(path)}
