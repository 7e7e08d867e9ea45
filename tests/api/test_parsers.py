"""The API's JSON parser (pools/api/parsers.py): a session's unsafe request is parsed by DRF before the view."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from pools.models import LaunchSpec
from tests.fixtures.web import WebWorld

SYNC = "/api/v1/launch-specs:sync"


@pytest.fixture
def session(operator: User) -> tuple[Client, dict[str, str]]:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.get(reverse("overview"))  # the page sets the CSRF cookie
    return client, {"X-CSRFToken": client.cookies["csrftoken"].value}


@pytest.mark.parametrize("body", ["[" * 100_000, '{"launchSpecs": [1e5' + "0" * 5000 + "]}", '{"launchSpecs": [',
                                  b'{"launchSpecs": ["\xff"]}'])
def test_a_bad_body_with_a_session_is_a_json_400_with_problems(
    web_world: WebWorld, session: tuple[Client, dict[str, str]], body: str | bytes
) -> None:
    """DRF's own parser let a deeply nested body's RecursionError out as a 500 (its CSRF check parses the body)."""
    client, headers = session
    eip = web_world.eips[0].allocation_id
    for path in (SYNC, f"/api/v1/eips/{eip}/reassign"):
        response = client.post(path, body, content_type="application/json", headers=headers)
        assert response.status_code == 400, (path, response.content[:300])
        assert response["Content-Type"] == "application/json" and response.json()["problems"], response.content


def test_a_good_body_with_a_session_still_reaches_the_view(
    web_world: WebWorld, session: tuple[Client, dict[str, str]]
) -> None:
    client, headers = session
    spec = {"launchSpec": {"name": "ingress", "labels": [{"key": "pool", "value": "ingress"}], "cluster": "prod",
                           "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}}}}
    body = json.dumps({"launchSpecs": [spec, {"launchSpec": {**spec["launchSpec"], "name": "egress"}}]})
    response = client.post(SYNC, body, content_type="application/json", headers=headers)
    assert response.status_code == 200, response.content
    assert response.json()["created"] == ["ingress"] and LaunchSpec.objects.filter(name="ingress").exists()
