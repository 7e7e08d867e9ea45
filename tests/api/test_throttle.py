"""Rate limits (pools/api/throttle.py): EIPDASH_API_RATE per user (all its tokens together), EIPDASH_API_ANON_RATE
per client address for requests without a valid credential; 429 with Retry-After. The counters live in Redis, one
sorted set per user or address, updated by one script (atomic: parallel requests cannot both take the last slot).
tests/e2e/test_api_throttle_gunicorn.py runs the same limits through gunicorn with parallel clients."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from pools.api.tokens import token_create
from tests.api.conftest import Api, api_for

SPECS = "/api/v1/launch-specs/"
# A well-formed secret that no token has.
BAD_TOKEN = "eipd_" + "x" * 43


def from_address(address: str, secret: str | None = None, **meta: str) -> Api:
    """A client whose requests come from `address` (REMOTE_ADDR), with `secret` as bearer token if given."""
    return Api(secret, client=Client(REMOTE_ADDR=address, **meta))


def assert_throttled(response: object) -> None:
    """DRF's 429: JSON, Retry-After within the period (a minute in these tests)."""
    assert response.status_code == 429, response.content  # type: ignore[attr-defined]
    assert 0 < int(response["Retry-After"]) <= 60  # type: ignore[index]
    assert "throttled" in response.json()["detail"].lower()  # type: ignore[attr-defined]


def test_each_user_has_one_budget_whatever_its_tokens_and_429_says_when_to_retry(
    viewer: User, operator: User, settings: Settings
) -> None:
    settings.EIPDASH_API_RATE = "3/min"
    first, second = api_for(viewer), api_for(viewer)
    assert [first.get(SPECS).status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(first.get(SPECS))
    # A second token of the same user shares the budget: N tokens must not give N times the rate.
    assert second.get(SPECS).status_code == 429
    assert api_for(operator).get(SPECS).status_code == 200  # another user counts alone


def test_the_user_counter_is_one_redis_key_that_every_process_shares(
    viewer: User, settings: Settings, redis_url: str
) -> None:
    """The production setting (REDIS_URL): the counter is in Redis, not in a process, so every web process (and
    every gunicorn worker) counts against one limit; it expires by itself after the period."""
    settings.EIPDASH_API_RATE = "2/min"
    api = api_for(viewer)
    assert [api.get(SPECS).status_code for _ in range(2)] == [200, 200]
    client = redis.Redis.from_url(redis_url)
    key = f"eipdash:api-throttle:user:{viewer.pk}"
    assert client.zcard(key) == 2
    assert 0 < client.pttl(key) <= 60_000
    assert api.get(SPECS).status_code == 429
    assert client.zcard(key) == 2, "a refused request takes no slot"
    # What another process counted is seen here: one slot of the window given back, one request passes.
    oldest = client.zrange(key, 0, 0)[0]
    client.zrem(key, oldest)
    assert [api.get(SPECS).status_code for _ in range(2)] == [200, 429]


def test_a_wrong_token_gets_429_after_the_limit_per_address_and_never_locks_out_a_valid_one(
    viewer: User, settings: Settings, redis_url: str
) -> None:
    settings.EIPDASH_API_ANON_RATE = "3/min"
    attacker = from_address("192.0.2.10", BAD_TOKEN)
    assert [attacker.get(SPECS).status_code for _ in range(3)] == [401, 401, 401]
    assert_throttled(attacker.get(SPECS))
    assert_throttled(attacker.get(SPECS))  # hammered: 429, not 401 forever
    assert redis.Redis.from_url(redis_url).zcard("eipdash:api-throttle:address:192.0.2.10") == 3
    # No credential at all from that address shares its budget.
    assert from_address("192.0.2.10").get(SPECS).status_code == 429
    # Another address has its own.
    assert from_address("192.0.2.20", BAD_TOKEN).get(SPECS).status_code == 401
    # A valid token is never refused for someone else's failures: from another address, nor from this one.
    secret = token_create(user=viewer).secret
    assert from_address("192.0.2.20", secret).get(SPECS).status_code == 200
    assert from_address("192.0.2.10", secret).get(SPECS).status_code == 200


def test_anonymous_requests_get_429_after_the_limit(settings: Settings) -> None:
    settings.EIPDASH_API_ANON_RATE = "2/min"
    anonymous = from_address("192.0.2.11")
    assert [anonymous.get(SPECS).status_code for _ in range(2)] == [401, 401]
    assert_throttled(anonymous.get(SPECS))
    # The schema and the docs are API views too.
    assert anonymous.get("/api/schema/").status_code == 429


def test_x_forwarded_for_counts_only_behind_the_configured_number_of_proxies(settings: Settings) -> None:
    settings.EIPDASH_API_ANON_RATE = "2/min"
    # No proxy configured (the default): a client cannot open a fresh budget by writing the header itself.
    forged = [from_address("192.0.2.30", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}") for n in range(3)]
    assert [api.get(SPECS).status_code for api in forged] == [401, 401, 429]

    # Behind one proxy: the address that proxy appended is the client's, whatever the client wrote before it.
    settings.EIPDASH_NUM_PROXIES = 1
    proxied = [from_address("10.0.0.5", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}, 198.51.100.1") for n in range(3)]
    assert [api.get(SPECS).status_code for api in proxied] == [401, 401, 429]
    assert from_address("10.0.0.5", HTTP_X_FORWARDED_FOR="198.51.100.2").get(SPECS).status_code == 401
    # A header with fewer addresses than proxies (or garbage) says nothing: the proxy's own address counts.
    assert [from_address("10.0.0.6", HTTP_X_FORWARDED_FOR=junk).get(SPECS).status_code
            for junk in ("", "not-an-address", " , ")] == [401, 401, 429]


def test_every_api_request_counts_once_whatever_its_answer(
    viewer: User, stranger: User, settings: Settings, redis_url: str
) -> None:
    settings.EIPDASH_API_RATE = "3/min"
    client = redis.Redis.from_url(redis_url)
    # A viewer's write is refused by the view (403), after the throttle counted it: once, not twice.
    viewer_api = api_for(viewer)
    assert viewer_api.delete(f"{SPECS}egress").status_code == 403
    assert viewer_api.get(f"{SPECS}no-such-spec").status_code == 404
    assert client.zcard(f"eipdash:api-throttle:user:{viewer.pk}") == 2
    # An account in no group is refused before DRF's throttles run: it is counted all the same.
    stranger_api = api_for(stranger)
    assert [stranger_api.get(SPECS).status_code for _ in range(3)] == [403, 403, 403]
    assert_throttled(stranger_api.get(SPECS))


@pytest.mark.parametrize("redis_setting", [None, "redis://127.0.0.1:9/0"], ids=["no-redis", "redis-down"])
def test_without_redis_each_process_still_enforces_the_limit(
    viewer: User, settings: Settings, redis_setting: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """DEBUG runs without REDIS_URL, or a Redis that does not answer: the limit holds in this process alone
    (logged), never a 500 and never no limit at all."""
    from pools.api import throttle

    throttle.forget_local()  # this process's counters: another test's must not count here
    settings.REDIS_URL = redis_setting
    settings.EIPDASH_API_RATE = "2/min"
    settings.EIPDASH_API_ANON_RATE = "2/min"
    api = api_for(viewer)
    with caplog.at_level(logging.WARNING, logger="pools.api.throttle"):
        assert [api.get(SPECS).status_code for _ in range(3)] == [200, 200, 429]
        anonymous = from_address("192.0.2.40")
        assert [anonymous.get(SPECS).status_code for _ in range(3)] == [401, 401, 429]
    if redis_setting:
        assert "Redis does not answer" in caplog.text


def test_the_throttle_module_imports_before_drf_views() -> None:
    """DRF's APIView class body imports DEFAULT_THROTTLE_CLASSES: importing the throttle module first (a fresh
    process whose first import is it, as a test on a new xdist worker) must not find itself half-made."""
    code = ("import django; django.setup(); import pools.api.throttle; import rest_framework.views as v; "
            "print(v.APIView.throttle_classes[0].__name__)")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "TokenRateThrottle"
