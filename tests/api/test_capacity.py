"""GET /api/v1/launch-specs/{name}/capacity (pools/api/capacity.py): the spec page's capacity report, with exactly
its keys."""

from __future__ import annotations

import pytest

from pools.models import LaunchSpec, Node, RegionFacts
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld

pytestmark = pytest.mark.django_db

URL = "/api/v1/launch-specs/egress/capacity"


def test_the_report_has_exactly_its_keys_and_the_pools_figures(web_world: WebWorld, viewer_api: Api) -> None:
    LaunchSpec.objects.filter(pk=web_world.spec.pk).update(min_free=3)
    RegionFacts.objects.create(region="us-east-1", eip_quota=5, eip_quota_source="service-quotas", egress={
        "subnet-public": {"via": "internet-gateway", "target": "igw-1", "address": ""},
        "subnet-private": {"via": "nat", "target": "nat-1", "address": "198.51.100.7"}})
    Node.objects.filter(name="node-a").update(subnet_id="subnet-public")
    Node.objects.filter(name="node-b").update(subnet_id="subnet-private")

    response = viewer_api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"pool", "inUse", "free", "minFree", "peak7d", "peak30d", "shortfall", "quota", "cost",
                         "egress"}
    assert set(body["quota"]) == {"limit", "allocated", "available"}
    assert set(body["cost"]) == {"hourlyUsd", "monthUsd", "idleMonthUsd", "byoip"}
    assert set(body["egress"]) == {"nodes", "viaInternetGateway", "viaNat", "noRoute"}
    # web_world: 2 pool EIPs (the third is gone), one on node-a; node-b waits.
    assert (body["pool"], body["inUse"], body["free"], body["minFree"]) == (2, 1, 1, 3)
    assert body["quota"] == {"limit": 5, "allocated": 2, "available": 3}
    assert body["egress"] == {"nodes": 2, "viaInternetGateway": 1, "viaNat": 1, "noRoute": 0}


def test_an_unknown_quota_is_null_never_a_guess(web_world: WebWorld, viewer_api: Api) -> None:
    RegionFacts.objects.create(region="us-east-1", quota_error="AccessDenied: servicequotas:GetServiceQuota")
    assert viewer_api.get(URL).json()["quota"] == {"limit": None, "allocated": 2, "available": None}


def test_an_unknown_spec_is_404_and_strangers_are_refused(web_world: WebWorld, viewer_api: Api,
                                                          stranger_api: Api) -> None:
    missing = viewer_api.get("/api/v1/launch-specs/nope/capacity")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert Api().get(URL).status_code == 401
    assert stranger_api.get(URL).status_code == 403
