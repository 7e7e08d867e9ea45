"""Fixtures of the API tests: tokens for the personas, and clients that send them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from pools.api.tokens import token_create

# The e2e fixtures (a real Celery worker, the engine's world on a committed database, chromium).
from tests.e2e.conftest import page, stack  # noqa: F401


class Api:
    """A client that speaks JSON with a bearer token (or none)."""

    def __init__(self, secret: str | None = None, *, keyword: str = "Bearer", client: Client | None = None) -> None:
        self.client = client or Client()
        self.headers = {"Authorization": f"{keyword} {secret}"} if secret else {}

    def get(self, path: str, **params: Any):
        return self.client.get(path, params, headers=self.headers)

    def put(self, path: str, body: Any, *, raw: bool = False):
        data = body if raw else json.dumps(body)
        return self.client.put(path, data, content_type="application/json", headers=self.headers)

    def post(self, path: str, body: Any, *, raw: bool = False):
        data = body if raw else json.dumps(body)
        return self.client.post(path, data, content_type="application/json", headers=self.headers)

    def delete(self, path: str):
        return self.client.delete(path, headers=self.headers)


def api_for(user: User, **kwargs: Any) -> Api:
    return Api(token_create(user=user, **kwargs).secret)


@pytest.fixture
def operator_api(operator: User) -> Api:
    return api_for(operator, name="tests")


@pytest.fixture
def viewer_api(viewer: User) -> Api:
    return api_for(viewer, name="tests")


@pytest.fixture
def stranger(db: None) -> User:
    """An account in no group: the dashboard answers it 403."""
    return User.objects.create_user(username="nora-nogroup", password="correct-horse-battery")


@pytest.fixture
def stranger_api(stranger: User) -> Api:
    return api_for(stranger)
