"""/healthz: the database, Redis, and the age of each enabled spec's last successful pass. Anonymous callers (the
probes) get the status and counts; the specs' names are for readers and the metrics token."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
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


def test_fresh_passes_answer_200(viewer_client: Client, web_world: WebWorld, settings: SettingsWrapper) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=4, created_ago=3600)
    response = viewer_client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["redis"] == "ok"
    state = body["launch_specs"][web_world.spec.name]
    assert state["stale"] is False and 4 <= state["last_successful_pass_age_seconds"] < 15


def test_a_pass_older_than_three_intervals_answers_503(client: Client, viewer_client: Client, web_world: WebWorld,
                                                      settings: SettingsWrapper) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=60, created_ago=3600)
    response = viewer_client.get("/healthz")
    assert response.status_code == 503
    (problem,) = response.json()["problems"]
    assert problem.startswith(f"launch spec {web_world.spec.name}: last successful pass 6")  # 60 s, or a bit more
    assert problem.endswith("(more than 3 intervals of 5s)")
    # The web pods' own probes are not about the passes: a stuck worker must not take the dashboard down.
    assert client.get("/healthz?scope=web").status_code == 200


def test_a_new_spec_is_not_stale_before_its_first_pass(viewer_client: Client, web_world: WebWorld,
                                                       settings: SettingsWrapper) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=None, created_ago=10)
    assert viewer_client.get("/healthz").status_code == 200
    _set(web_world.spec, last_pass_ago=None, created_ago=20)
    response = viewer_client.get("/healthz")
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


# --- who sees what -------------------------------------------------------------------------------------------


def _summary_only(response: object, spec_name: str) -> dict[str, object]:
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert "launch_specs" not in body
    assert spec_name not in response.content.decode()  # type: ignore[attr-defined]
    return body


def test_anonymous_callers_get_the_status_and_counts_but_no_names(
    client: Client, web_world: WebWorld, settings: SettingsWrapper
) -> None:
    settings.EIPDASH_RECONCILE_SECONDS = 5
    LaunchSpec.objects.create(name="secret-egress", cluster=web_world.cluster, labels={"role": "x"},
                              tag_key="eipdash/pool", tag_value="other")
    _set(web_world.spec, last_pass_ago=4, created_ago=3600)
    response = client.get("/healthz")
    assert response.status_code == 200
    body = _summary_only(response, "egress")
    assert body == {"status": "ok", "problems": [], "database": "ok", "redis": "ok",
                    "launch_spec_counts": {"enabled": 2, "stale": 0}}

    # Stale: the same 503 as before, for the same reasons, counted rather than named.
    _set(web_world.spec, last_pass_ago=60, created_ago=3600)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = _summary_only(response, "egress")
    assert body["launch_spec_counts"] == {"enabled": 2, "stale": 1}
    assert body["problems"] == ["1 launch spec without a successful pass for more than 3 intervals of 5s"]
    # The web pods' probes: anonymous, the database only, unchanged.
    assert client.get("/healthz?scope=web").json() == {"status": "ok", "problems": [], "database": "ok"}


@pytest.mark.parametrize("who", ["reader", "metrics-token"])
def test_readers_and_the_metrics_token_get_the_names(
    who: str, client: Client, viewer_client: Client, web_world: WebWorld, settings: SettingsWrapper
) -> None:
    settings.EIPDASH_METRICS_TOKEN = "s3cret-token"
    _set(web_world.spec, last_pass_ago=1, created_ago=3600)
    response = (viewer_client.get("/healthz") if who == "reader"
                else client.get("/healthz", headers={"Authorization": "Bearer s3cret-token"}))
    assert response.status_code == 200
    body = response.json()
    assert body["launch_specs"][web_world.spec.name]["stale"] is False
    assert body["launch_spec_counts"] == {"enabled": 1, "stale": 0}


def test_a_wrong_token_or_an_account_in_no_group_gets_the_summary_with_the_same_status(
    client: Client, web_world: WebWorld, settings: SettingsWrapper
) -> None:
    settings.EIPDASH_METRICS_TOKEN = "s3cret-token"
    settings.EIPDASH_RECONCILE_SECONDS = 5
    _set(web_world.spec, last_pass_ago=60, created_ago=3600)
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", password="correct-horse-battery"))
    for response in (client.get("/healthz", headers={"Authorization": "Bearer s3cret-tokeN"}),
                     client.get("/healthz", headers={"Authorization": "s3cret-token"}),
                     nobody.get("/healthz")):
        assert response.status_code == 503  # never a 401: a probe's answer depends on health alone
        _summary_only(response, "egress")


def test_without_a_metrics_token_no_bearer_gets_the_names(client: Client, web_world: WebWorld,
                                                          settings: SettingsWrapper) -> None:
    settings.EIPDASH_METRICS_TOKEN = None
    _set(web_world.spec, last_pass_ago=1, created_ago=3600)
    for header in ("Bearer ", "Bearer", "Bearer None"):
        _summary_only(client.get("/healthz", headers={"Authorization": header}), "egress")
