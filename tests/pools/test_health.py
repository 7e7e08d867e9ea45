"""/healthz: the database, Redis, and the age of each enabled spec's last successful pass."""

from __future__ import annotations

import datetime as dt

from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from pools.models import LaunchSpec
from tests.fixtures.web import WebWorld


def _set(spec: LaunchSpec, *, last_pass_ago: float | None, created_ago: float) -> None:
    now = timezone.now()
    LaunchSpec.objects.filter(pk=spec.pk).update(
        last_successful_pass_at=None if last_pass_ago is None else now - dt.timedelta(seconds=last_pass_ago),
        created_at=now - dt.timedelta(seconds=created_ago),
    )


def test_fresh_passes_answer_200(client: Client, web_world: WebWorld, settings: SettingsWrapper) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=4, created_ago=3600)
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["redis"] == "ok"
    state = body["launch_specs"][web_world.spec.name]
    assert state["stale"] is False and 4 <= state["last_successful_pass_age_seconds"] < 15


def test_a_pass_older_than_three_intervals_answers_503(client: Client, web_world: WebWorld,
                                                      settings: SettingsWrapper) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=60, created_ago=3600)
    response = client.get("/healthz")
    assert response.status_code == 503
    (problem,) = response.json()["problems"]
    assert problem.startswith(f"launch spec {web_world.spec.name}: last successful pass 6")  # 60 s, or a bit more
    assert problem.endswith("(more than 3 intervals of 5s)")
    # The web pods' own probes are not about the passes: a stuck worker must not take the dashboard down.
    assert client.get("/healthz?scope=web").status_code == 200


def test_a_new_spec_is_not_stale_before_its_first_pass(client: Client, web_world: WebWorld,
                                                       settings: SettingsWrapper) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=None, created_ago=10)
    assert client.get("/healthz").status_code == 200
    _set(web_world.spec, last_pass_ago=None, created_ago=20)
    response = client.get("/healthz")
    assert response.status_code == 503 and "no successful pass yet" in response.json()["problems"][0]


def test_a_disabled_spec_is_not_checked(client: Client, web_world: WebWorld, settings: SettingsWrapper) -> None:
    _set(web_world.spec, last_pass_ago=None, created_ago=3600)
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(enabled=False)
    assert client.get("/healthz").status_code == 200


def test_redis_down_answers_503(client: Client, web_world: WebWorld, settings: SettingsWrapper) -> None:
    _set(web_world.spec, last_pass_ago=0, created_ago=3600)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["redis"] == "failing" and body["problems"][0].startswith("redis: ")
