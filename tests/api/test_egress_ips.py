"""GET /api/v1/launch-specs/{name}/egress-ips (pools/api/capacity.py): the pool's IPs for partners' allowlists, in
numeric order, as JSON or text, with a weak ETag that a polling sync job gets 304 on until the list changes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from pools.models import Cluster, ElasticIP, LaunchSpec
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld, make_eip

pytestmark = pytest.mark.django_db

URL = "/api/v1/launch-specs/egress/egress-ips"


def _eip(index: int, public_ip: str, **extra: Any) -> ElasticIP:
    eip = make_eip(index, **extra)
    ElasticIP.objects.filter(pk=eip.pk).update(public_ip=public_ip)
    return eip


def test_every_pool_eip_in_numeric_order_with_its_state(web_world: WebWorld, viewer_api: Api) -> None:
    # web_world: 203.0.113.1 on node-a, 203.0.113.2 free, 203.0.113.3 gone (left out).
    _eip(10, "203.0.113.10")
    _eip(11, "203.0.113.9", association_id="eipassoc-foreign")  # in use by something else: a conflict
    _eip(12, "203.0.113.200", tags={"eipdash/pool": "other"})  # another pool
    _eip(13, "203.0.113.11", region="eu-west-1")  # another region
    newest = timezone.now() + dt.timedelta(seconds=30)
    ElasticIP.objects.filter(public_ip="203.0.113.10").update(last_seen_at=newest)
    ElasticIP.objects.filter(gone=True).update(last_seen_at=newest + dt.timedelta(hours=1))  # not a pool row

    response = viewer_api.get(URL)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"launchSpec", "addresses", "updatedAt"} and body["launchSpec"] == "egress"
    assert [(a["publicIp"], a["state"]) for a in body["addresses"]] == [
        ("203.0.113.1", "in-use"), ("203.0.113.2", "free"), ("203.0.113.9", "in-use"), ("203.0.113.10", "free")]
    assert set(body["addresses"][0]) == {"publicIp", "allocationId", "state"}
    assert body["addresses"][0]["allocationId"] == web_world.eips[0].allocation_id
    assert dt.datetime.fromisoformat(body["updatedAt"]) == newest

    text = viewer_api.get(URL, format="txt")
    assert text.status_code == 200 and text["Content-Type"] == "text/plain; charset=utf-8"
    assert text.content.decode() == "203.0.113.1\n203.0.113.2\n203.0.113.9\n203.0.113.10\n"


def test_an_unchanged_list_answers_304_to_if_none_match(web_world: WebWorld, viewer_api: Api) -> None:
    first = viewer_api.get(URL)
    etag = first["ETag"]
    assert etag.startswith('W/"')
    headers = viewer_api.headers
    for sent in (etag, etag.removeprefix("W/"), f'"other", {etag}', "*"):
        again = viewer_api.client.get(URL, headers={**headers, "If-None-Match": sent})
        assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag, sent
    assert viewer_api.client.get(URL, headers={**headers, "If-None-Match": '"other"'}).status_code == 200

    # A pass reads the pool again: updatedAt moves, the ETag does not.
    ElasticIP.objects.update(last_seen_at=timezone.now() + dt.timedelta(minutes=1))
    assert viewer_api.get(URL).json()["updatedAt"] != first.json()["updatedAt"]
    assert viewer_api.client.get(URL, headers={**headers, "If-None-Match": etag}).status_code == 304

    # A state changes: a new JSON; the text (the IPs only) is unchanged.
    text_etag = viewer_api.get(URL, format="txt")["ETag"]
    assert text_etag != etag
    ElasticIP.objects.filter(pk=web_world.eips[1].pk).update(association_id="eipassoc-now-used")
    changed = viewer_api.client.get(URL, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert viewer_api.client.get(URL, {"format": "txt"},
                                 headers={**headers, "If-None-Match": text_etag}).status_code == 304

    # Another IP joins the pool: both change.
    _eip(20, "203.0.113.20")
    assert viewer_api.client.get(URL, {"format": "txt"},
                                 headers={**headers, "If-None-Match": text_etag}).status_code == 200


def test_an_unknown_spec_is_404_and_a_bad_format_400_in_json(web_world: WebWorld, viewer_api: Api) -> None:
    missing = viewer_api.get("/api/v1/launch-specs/nope/egress-ips")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    bad = viewer_api.get(URL, format="csv")
    assert bad.status_code == 400 and bad["Content-Type"] == "application/json"
    assert bad.json()["problems"] == ["format: json or txt, not 'csv'"]


def test_the_read_endpoints_rules_apply(web_world: WebWorld, stranger_api: Api, viewer_client: Client) -> None:
    assert Api().get(URL).status_code == 401
    assert stranger_api.get(URL).status_code == 403
    # The dashboard's session reads it too (a reader's browser).
    assert viewer_client.get(URL, {"format": "txt"}).content.decode().startswith("203.0.113.1\n")


def test_an_empty_pool_is_an_empty_list(db: None, viewer_api: Api) -> None:
    cluster = Cluster.objects.create(name="prod", region="us-east-1")
    LaunchSpec.objects.create(name="egress", cluster=cluster, labels={"a": "b"}, tag_key="eipdash/pool",
                              tag_value="egress")
    assert viewer_api.get(URL).json() == {"launchSpec": "egress", "addresses": [], "updatedAt": None}
    assert viewer_api.get(URL, format="txt").content == b""
