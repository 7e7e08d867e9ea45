"""deploy/prometheus-rules.yaml and deploy/grafana-dashboard.json: they parse, and every metric they use is
one that /metrics really serves (promtool is not available: the names are what drifts)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client

from pools import metrics
from pools.models import RegionFacts
from tests.fixtures.web import WebWorld

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
METRIC = re.compile(r"\beipdash_[a-z_]+\b")
HISTOGRAMS = {"eipdash_reconcile_duration_seconds", "eipdash_time_to_eip_seconds"}


def known_series() -> set[str]:
    names = set(metrics.METRIC_NAMES)
    return names | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "count", "sum")}


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in expr:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


def test_the_alert_rules_cover_what_operators_need() -> None:
    alerts = {str(rule["alert"]): rule for rule in rules()}
    assert set(alerts) == {"EipdashPoolExhausted", "EipdashNodesWaitingTooLong", "EipdashPassStale",
                           "EipdashAwsErrorRate"}
    for name, rule in alerts.items():
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name  # type: ignore[index]
        assert rule["annotations"]["summary"], name  # type: ignore[index]
    assert "300" in str(alerts["EipdashNodesWaitingTooLong"]["expr"])  # 5 minutes
    assert "3 * max(eipdash_reconcile_interval_seconds)" in str(alerts["EipdashPassStale"]["expr"])


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_uses_existing_metrics(source: str) -> None:
    exprs = [str(rule["expr"]) for rule in rules()] if source == "rules" else dashboard_exprs()
    assert exprs
    for expr in exprs:
        assert balanced(expr), expr
        used = set(METRIC.findall(expr))
        assert used, expr
        assert used <= known_series(), f"unknown metric in {expr!r}: {used - known_series()}"


def test_metrics_serves_every_listed_name(viewer_client: Client, web_world: WebWorld) -> None:
    # Labelled metrics show once they have a child; the workers create them as they count.
    metrics.AWS_CALLS.labels("DescribeAddresses", "ok")
    metrics.KUBE_CALLS.labels("list", "ok")
    metrics.RECONCILE_DURATION.labels(web_world.spec.name)
    metrics.EVENTS.labels("assigned")
    web_world.spec.last_successful_pass_at = web_world.spec.created_at
    web_world.spec.save(update_fields=["last_successful_pass_at"])
    # The quota gauge shows once a region's quota has been read (never a guessed value before).
    RegionFacts.objects.create(region=web_world.spec.region, eip_quota=5, eip_quota_source="account-attribute")
    body = viewer_client.get("/metrics").content.decode()
    served = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    missing = [name for name in metrics.METRIC_NAMES
               if name not in served and f"{name}_count" not in served]
    assert not missing, missing


# --- the worker's metrics port (9100): who may reach it, and how Prometheus authenticates ----------------------

KUBE_DIR = DEPLOY / "kubernetes"
OPERATOR_DIR = KUBE_DIR / "prometheus-operator"
# The documented placeholder of networkpolicy.yaml: the namespace Prometheus runs in, and its pods' labels.
PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}


def kube_documents(directory: Path) -> list[dict[str, Any]]:
    return [d for path in sorted(directory.glob("*.yaml")) if path.name != "kustomization.yaml"
            for d in yaml.safe_load_all(path.read_text()) if d]


def worker() -> dict[str, Any]:
    (deployment,) = [d for d in kube_documents(KUBE_DIR)
                     if d["kind"] == "Deployment" and d["metadata"]["name"] == "eipdash-worker"]
    return deployment


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the manifests use matchLabels only
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_only_prometheus_may_reach_the_worker_metrics_port() -> None:
    labels = worker()["spec"]["template"]["metadata"]["labels"]
    policies = [d for d in kube_documents(KUBE_DIR) if d["kind"] == "NetworkPolicy"
                and selects({"matchLabels": d["spec"]["podSelector"].get("matchLabels", {})}, labels)
                and "matchExpressions" not in d["spec"]["podSelector"]]
    ingress = [rule for policy in policies for rule in policy["spec"].get("ingress") or []]
    assert ingress, "the metrics port must be reachable by Prometheus"
    for rule in ingress:
        # A rule without `from` admits every pod and address of the cluster (and beyond).
        assert rule.get("from") == [PROMETHEUS_PEER], rule
        assert rule["ports"] == [{"protocol": "TCP", "port": 9100}], rule
    # The controllers' policy (matchExpressions) admits nothing at all.
    controllers = next(d for d in kube_documents(KUBE_DIR) if d["metadata"]["name"] == "eipdash-controllers")
    assert not controllers["spec"].get("ingress")


def test_the_worker_serves_its_metrics_with_the_token_from_the_secret() -> None:
    container = worker()["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EIPDASH_METRICS_PORT"] == "9100" and env["EIPDASH_METRICS_ADDR"] == "0.0.0.0"
    # EIPDASH_METRICS_TOKEN comes from the Secret eipdash-secrets, never from the ConfigMap or a literal.
    assert {"secretRef": {"name": "eipdash-secrets"}} in container["envFrom"]
    assert "EIPDASH_METRICS_TOKEN" not in env
    config = next(d for d in kube_documents(KUBE_DIR) if d["kind"] == "ConfigMap")
    assert "EIPDASH_METRICS_TOKEN" not in config["data"]


def test_the_pod_monitor_scrapes_the_workers_with_the_bearer_token() -> None:
    """The Prometheus Operator's PodMonitor (deploy/kubernetes/prometheus-operator/, applied on its own: the CRD
    may not exist): it selects the worker pods, their named port, and sends the token the workers read."""
    deployment = worker()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    kustomization = yaml.safe_load((OPERATOR_DIR / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in OPERATOR_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert "prometheus-operator" not in str(yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text()))
    (monitor,) = kube_documents(OPERATOR_DIR)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert selects(monitor["spec"]["selector"], pod_labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == 9100 and endpoint["path"] == "/metrics"
    # The Secret in the monitor's own namespace (where the operator looks), the key the worker reads.
    assert endpoint["authorization"] == {"type": "Bearer",
                                         "credentials": {"name": "eipdash-secrets", "key": "EIPDASH_METRICS_TOKEN"}}
    assert "bearerTokenSecret" not in endpoint  # deprecated by the operator in favour of `authorization`
    # What `kubectl apply -k` would send: the same object, in the namespace the Secret is in.
    kubectl = Path(sys.executable).parent / "kubectl"
    if kubectl.exists():
        rendered = subprocess.run([str(kubectl), "kustomize", str(OPERATOR_DIR)], capture_output=True, text=True,
                                  timeout=60, check=True).stdout
        assert [d for d in yaml.safe_load_all(rendered) if d] == [monitor]


def test_the_rules_file_says_how_to_scrape_the_workers() -> None:
    header = (DEPLOY / "prometheus-rules.yaml").read_text().split("\ngroups:")[0]
    assert "EIPDASH_METRICS_TOKEN" in header and "prometheus-operator/podmonitor.yaml" in header
    assert "authorization" in header
