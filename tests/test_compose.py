"""The deployment files, checked without a Docker engine or a cluster: docker-compose.yml, the Dockerfile,
the Kubernetes manifests and the IAM policy parse, run the right commands, and keep secrets default-free."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
KUBE_DIR = ROOT / "deploy" / "kubernetes"
APP_SERVICES = ("migrate", "web", "worker", "beat", "watch")
CONTROLLERS = ("worker", "beat", "watch")
SECRET_NAMES = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "EIPDASH_METRICS_TOKEN", "AWS_SECRET_ACCESS_KEY",
                "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "EIPDASH_ADMIN_PASSWORD")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # PyYAML resolves the x-app anchors and `<<` merge keys as compose does.
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def test_compose_has_the_production_services_and_a_sandbox_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", *APP_SERVICES, "sandbox"} <= set(services)
    assert services["sandbox"]["profiles"] == ["sandbox"]
    for name in ("postgres", "redis", *APP_SERVICES):
        assert "profiles" not in services[name], f"{name} must run without a profile"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_compose_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web = command_of(services["web"])
    assert web[0] == "gunicorn" and "eipdash.wsgi:application" in web
    assert any(arg.startswith("0.0.0.0:8000") for arg in web)
    assert command_of(services["worker"])[:4] == ["celery", "-A", "eipdash", "worker"]
    assert command_of(services["beat"])[:4] == ["celery", "-A", "eipdash", "beat"]
    assert command_of(services["watch"]) == ["python", "manage.py", "watch_nodes"]
    assert command_of(services["migrate"])[:3] == ["python", "manage.py", "migrate"]
    sandbox = command_of(services["sandbox"])
    assert sandbox[:3] == ["python", "manage.py", "sandbox"] and "--simulate" in sandbox


def test_app_services_wait_for_their_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("web", *CONTROLLERS):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DJANGO_DEBUG"] == "false"


def test_no_secret_has_a_default() -> None:
    text = COMPOSE.read_text()
    found = {m["name"] for m in INTERPOLATION.finditer(text)}
    assert {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"} <= found
    for match in INTERPOLATION.finditer(text):
        if match["name"] in SECRET_NAMES:
            assert match["op"] in (":?", "?"), f"{match.group(0)}: a secret must be required, not defaulted"


def test_secret_variables_are_required_or_passed_through(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key not in SECRET_NAMES:
                continue
            # None: passed through from the host only when set there. Otherwise a required interpolation.
            assert value is None or re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), (name, key, value)


def settings_env_names() -> set[str]:
    sources = (ROOT / "eipdash" / "settings.py").read_text() + (ROOT / "eipdash" / "celery.py").read_text()
    return set(re.findall(r"env_(?:str|bool|int|list)\(\s*\"([A-Z0-9_]+)\"", sources))


def test_every_setting_of_eipdash_is_configurable_in_compose(compose: dict[str, Any]) -> None:
    names = settings_env_names()
    assert {"DATABASE_URL", "DJANGO_SECRET_KEY", "EIPDASH_RECONCILE_SECONDS"} <= names
    web_env = compose["services"]["web"]["environment"]
    missing = sorted(names - set(web_env))
    assert missing == [], f"settings read {missing} but docker-compose.yml does not expose them"


def test_the_sandbox_profile_feeds_the_controllers_its_env_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sandbox = services["sandbox"]
    assert sandbox["build"]["target"] == "sandbox"
    state_dir = command_of(sandbox)[command_of(sandbox).index("--state-dir") + 1]
    assert sandbox["environment"]["EIPDASH_ENV_FILE"] == "", "the sandbox writes the file, it must not wait"
    for name in CONTROLLERS:
        mounts = [str(v).split(":")[1] for v in services[name]["volumes"]]
        assert state_dir in mounts
        assert services[name]["environment"]["EIPDASH_ENV_FILE"] == "${EIPDASH_ENV_FILE:-}"


def test_dockerfile_targets_match_compose(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
    assert "USER eipdash" in dockerfile
    entrypoint = ROOT / "deploy" / "docker-entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)


def kube_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(KUBE_DIR.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def test_kubernetes_manifests_parse_and_kustomize_lists_them_all() -> None:
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    on_disk = {p.name for p in KUBE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    kinds = [d["kind"] for d in kube_documents()]
    assert "Secret" not in kinds, "secrets are created out of band, never committed"
    deployments = {d["metadata"]["name"]: d for d in kube_documents() if d["kind"] == "Deployment"}
    assert set(deployments) == {"eipdash-web", "eipdash-worker", "eipdash-beat", "eipdash-watch"}


def test_kubernetes_rbac_is_exactly_what_the_controllers_need() -> None:
    roles = [d for d in kube_documents() if d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in roles[0]["rules"]}
    assert rules == {
        (("",), ("nodes",)): ["get", "list", "patch", "watch"],
        (("",), ("pods",)): ["list"],
    }
    deployments = {d["metadata"]["name"]: d for d in kube_documents() if d["kind"] == "Deployment"}
    for name in ("eipdash-worker", "eipdash-watch"):
        assert deployments[name]["spec"]["template"]["spec"]["serviceAccountName"] == "eipdash-controller"
    for name in ("eipdash-web", "eipdash-beat"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
    beat = deployments["eipdash-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["command"] for name, d in deployments.items()
    }
    assert commands["eipdash-web"][0] == "gunicorn"
    assert commands["eipdash-worker"][:4] == ["celery", "-A", "eipdash", "worker"]
    assert commands["eipdash-beat"][:4] == ["celery", "-A", "eipdash", "beat"]
    assert commands["eipdash-watch"] == ["python", "manage.py", "watch_nodes"]
    for deployment in deployments.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "eipdash-secrets"}} in container["envFrom"]


def test_iam_policy_grants_only_the_ec2_calls_eipdash_makes() -> None:
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert actions == {
        "ec2:DescribeAddresses",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:AssociateAddress",
        "ec2:DisassociateAddress",
    }
    assert all(statement["Effect"] == "Allow" for statement in policy["Statement"])


def test_procfile_runs_the_same_processes() -> None:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line and not line.startswith("#")]
    processes = dict(line.split(": ", 1) for line in lines)
    assert set(processes) == {"release", "web", "worker", "beat", "watch"}
    assert processes["web"].startswith("gunicorn eipdash.wsgi:application")
    assert processes["worker"].startswith("celery -A eipdash worker")
    assert processes["beat"].startswith("celery -A eipdash beat")
    assert processes["watch"] == "python manage.py watch_nodes"
    assert processes["release"].startswith("python manage.py migrate")
