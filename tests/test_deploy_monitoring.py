"""deploy/prometheus-rules.yaml and deploy/grafana-dashboard.json: they parse, and every metric they use is
one that /metrics really serves (promtool is not available: the names are what drifts)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from django.test import Client

from pools import metrics
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
    body = viewer_client.get("/metrics").content.decode()
    served = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    missing = [name for name in metrics.METRIC_NAMES
               if name not in served and f"{name}_count" not in served]
    assert not missing, missing
