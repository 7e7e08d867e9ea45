"""Rate limits: EIPDASH_API_RATE per user (all its tokens together), 429 with Retry-After; counters in Redis are
shared by processes."""

from __future__ import annotations

import uuid

import redis
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from tests.api.conftest import api_for

SPECS = "/api/v1/launch-specs/"


def test_each_user_has_one_budget_whatever_its_tokens_and_429_says_when_to_retry(
    viewer: User, operator: User, settings: Settings
) -> None:
    settings.EIPDASH_API_RATE = "3/min"
    first, second = api_for(viewer), api_for(viewer)
    assert [first.get(SPECS).status_code for _ in range(3)] == [200, 200, 200]
    refused = first.get(SPECS)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60 and "throttled" in refused.json()["detail"].lower()
    # A second token of the same user shares the budget: N tokens must not give N times the rate.
    assert second.get(SPECS).status_code == 429
    assert api_for(operator).get(SPECS).status_code == 200  # another user counts alone


def test_with_redis_every_process_counts_against_one_limit(viewer: User, settings: Settings, redis_url: str) -> None:
    """The production setting (REDIS_URL): the counters live in Redis, so a second web process, with caches
    of its own, sees the requests the first one counted."""
    from django.core.cache import caches

    prefix = f"test-{uuid.uuid4().hex}"
    redis_cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url,
                   "KEY_PREFIX": prefix}
    settings.EIPDASH_API_RATE = "2/min"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
                       "api-throttle": redis_cache}
    api = api_for(viewer)
    try:
        assert [api.get(SPECS).status_code for _ in range(2)] == [200, 200]
        # "Another process": every cache connection of this one is dropped and made anew from the settings.
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                       "LOCATION": "other"}, "api-throttle": dict(redis_cache)}
        assert caches["api-throttle"] is not None
        assert api.get(SPECS).status_code == 429
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
