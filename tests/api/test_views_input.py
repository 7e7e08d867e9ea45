"""Forged input to the API (issue 19): a cursor of another list, altered, or holding a value its field cannot
take; a limit in other digits than ASCII; a date whose offset leaves the calendar; bodies nested deep or with
lone surrogates; unsafe methods on paths that are no endpoint, and CSRF failures. Each is a JSON 4xx that says
what is wrong, never a 500 or an HTML page."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone
from pytest_django.fixtures import Settings

from pools.api.views import EipListView, EventListView, NodeListView
from pools.models import ElasticIP, Event, Node, UnmanagedAddress
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld

CURSOR_REFUSED = {"detail": "bad filter",
                  "problems": ["cursor: not one of this list's cursors; take it from a page's `next`"]}
LISTS = {"eips": "/api/v1/eips/", "unmanaged": "/api/v1/eips/?state=unmanaged", "nodes": "/api/v1/nodes/",
         "events": "/api/v1/events/"}


def _get(api: Api, url: str, **params: Any) -> Any:
    path, _, query = url.partition("?")
    return api.get(path, **{key: values[0] for key, values in parse_qs(query).items()}, **params)


def _next_cursor(api: Api, url: str) -> str:
    """The cursor of the list's second page (a page of one row)."""
    response = _get(api, url, limit=1)
    assert response.status_code == 200 and response.json()["next"], response.content
    return parse_qs(urlsplit(response.json()["next"]).query)["cursor"][0]


def _with_cursor(api: Api, url: str, cursor: str) -> Any:
    return _get(api, url, cursor=cursor)


def _unmanaged(count: int) -> None:
    for index in range(count):
        UnmanagedAddress.objects.create(allocation_id=f"eipalloc-foreign{index}", region="us-east-1",
                                        public_ip=f"198.51.100.{index + 1}", last_seen_at=timezone.now())


def _old_format(kind: str, text: object, pk: object) -> str:
    """A cursor as the API wrote them before they were signed: anyone could write one."""
    return base64.urlsafe_b64encode(json.dumps([kind, text, pk]).encode()).decode().rstrip("=")


# --- cursors -------------------------------------------------------------------------------------------


def test_pagination_refuses_a_cursor_taken_from_another_list(web_world: WebWorld, viewer_api: Api) -> None:
    """A cursor keyed on a timestamp (events) replayed on a list keyed on a name was a 500; one of another list
    of the same key type (nodes on EIPs, EIPs on the unmanaged EIPs) silently started at a foreign position."""
    _unmanaged(2)
    cursors = {name: _next_cursor(viewer_api, url) for name, url in LISTS.items()}
    for name, url in LISTS.items():
        assert _with_cursor(viewer_api, url, cursors[name]).status_code == 200, name
        for other, cursor in cursors.items():
            if other != name:
                response = _with_cursor(viewer_api, url, cursor)
                assert (response.status_code, response.json()) == (400, CURSOR_REFUSED), (other, name)
                assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("url, cursor", [
    (LISTS["events"], _old_format("s", "abc", 5)),  # text for a timestamp
    (LISTS["events"], _old_format("t", "0001-01-01T00:00:00+14:00", 5)),  # no UTC instant
    (LISTS["events"], _old_format("t", "2026-01-01T00:00:00+00:00", 2**70)),  # beyond a bigint
    (LISTS["eips"], _old_format("s", "\ud800", 1)),  # no database stores it
    (LISTS["eips"], _old_format("t", "2026-01-01T00:00:00+00:00", 1)),  # a timestamp for a name
    (LISTS["nodes"], _old_format("s", "node-a", -1)),
    (LISTS["events"], "nonsense"),
])
def test_pagination_refuses_an_unsigned_cursor(web_world: WebWorld, viewer_api: Api, url: str, cursor: str) -> None:
    response = _with_cursor(viewer_api, url, cursor)
    assert (response.status_code, response.json()) == (400, CURSOR_REFUSED)


def test_pagination_refuses_an_altered_cursor_or_one_of_another_key(
    web_world: WebWorld, viewer_api: Api, settings: Settings
) -> None:
    cursor = _next_cursor(viewer_api, LISTS["eips"])
    body, _, signature = cursor.rpartition(":")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    other = base64.urlsafe_b64encode(json.dumps(["eipalloc-0", 1]).encode()).decode().rstrip("=")
    for altered in (f"{body}:{flipped}", body, f"{other}:{signature}"):
        assert _with_cursor(viewer_api, LISTS["eips"], altered).json() == CURSOR_REFUSED, altered
    settings.SECRET_KEY = "another-installations-secret-key-" + "x" * 30
    response = _with_cursor(viewer_api, LISTS["eips"], cursor)
    assert (response.status_code, response.json()) == (400, CURSOR_REFUSED)


@pytest.mark.parametrize("view, model, value, pk", [
    (EventListView, Event, "abc", 5),
    (EventListView, Event, 1767225600, 5),
    (EventListView, Event, None, 5),
    (EventListView, Event, ["2026-01-01T00:00:00+00:00"], 5),
    (EventListView, Event, "0001-01-01T00:00:00+14:00", 5),
    (EventListView, Event, "9999-12-31T23:59:59-14:00", 5),
    (EventListView, Event, "2026-01-01T00:00:00", 5),  # naive: the API writes only UTC instants
    (EventListView, Event, "2026-01-01T00:00:00+00:00", 2**63),
    (EventListView, Event, "2026-01-01T00:00:00+00:00", 2**70),
    (EventListView, Event, "2026-01-01T00:00:00+00:00", 0),
    (EventListView, Event, "2026-01-01T00:00:00+00:00", -1),
    (EventListView, Event, "2026-01-01T00:00:00+00:00", True),
    (EventListView, Event, "2026-01-01T00:00:00+00:00", "5"),
    (EventListView, Event, "2026-01-01T00:00:00+00:00", 5.0),
    (EipListView, ElasticIP, "\ud800", 1),
    (EipListView, ElasticIP, "eipalloc-\x00", 1),
    (EipListView, ElasticIP, "e" * 65, 1),  # longer than the column
    (EipListView, ElasticIP, 7, 1),
    (EipListView, ElasticIP, {"a": 1}, 1),
    (NodeListView, Node, "n" * 254, 1),
    (NodeListView, Node, False, 1),
])
def test_pagination_refuses_a_signed_cursor_whose_value_does_not_fit_its_field(
    web_world: WebWorld, viewer_api: Api, view: Any, model: Any, value: object, pk: object
) -> None:
    """Signed with this installation's key, and still checked field by field: a value of the wrong type or out
    of the column's range never reaches the database."""
    cursor = view.pagination_class.encode(model, value, pk)
    url = {EventListView: LISTS["events"], EipListView: LISTS["eips"], NodeListView: LISTS["nodes"]}[view]
    response = _with_cursor(viewer_api, url, cursor)
    assert (response.status_code, response.json()) == (400, CURSOR_REFUSED)


def test_pagination_accepts_a_signed_cursor_that_fits(web_world: WebWorld, viewer_api: Api) -> None:
    """The checks refuse only what does not fit: the API's own cursors, and the edges of the ranges, page on."""
    first = web_world.eips[0]
    cursor = EipListView.pagination_class.encode(ElasticIP, first.allocation_id, first.pk)
    rows = _with_cursor(viewer_api, LISTS["eips"], cursor).json()["results"]
    assert [row["allocationId"] for row in rows] == [e.allocation_id for e in web_world.eips[1:]]
    late = EventListView.pagination_class.encode(Event, "9999-12-30T00:00:00+00:00", 2**63 - 1)
    response = _with_cursor(viewer_api, LISTS["events"], late)
    assert response.status_code == 200 and len(response.json()["results"]) == Event.objects.count()


# --- limit, dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["²", "١٢", "𝟓", "1" * 5000, "+5", " 5", "5 ", "5.0", "-1", "0", "1001", ""])
def test_pagination_limit_takes_only_ascii_digits_in_range(db: None, viewer_api: Api, limit: str) -> None:
    """str.isdigit() accepts superscripts and other scripts' digits: int() failed on '²' (a 500) and read '١٢'
    as 12; 5,000 digits failed int() too."""
    response = viewer_api.get("/api/v1/events/", limit=limit)
    assert response.status_code == 400, response.content
    assert response.json() == {"detail": "bad filter", "problems": ["limit: a number from 1 to 1000"]}


@pytest.mark.parametrize("field, edge", [("since", "0001-01-01T00:00:00+14:00"),
                                         ("until", "9999-12-31T23:59:59-14:00")])
def test_event_list_refuses_a_date_whose_offset_leaves_the_calendar(
    web_world: WebWorld, viewer_api: Api, field: str, edge: str
) -> None:
    response = viewer_api.get("/api/v1/events/", **{field: edge})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["problems"] == [f"{field}: out of range: use a time between 1970 and 9999 (UTC)"]


# --- bodies --------------------------------------------------------------------------------------------

SPEC = {"name": "ingress", "labels": [{"key": "eipdash.io/pool", "value": "ingress"}],
        "elasticIpPool": {"tagSelector": {"tagKey": "eipdash/pool", "tagValue": "ingress"}},
        "cluster": "prod", "region": "us-east-1"}


def _spec_with(**changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(SPEC))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node: Any = spec
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return spec


SURROGATE = "\ud800"
HOSTILE_SPECS = [_spec_with(name=SURROGATE), _spec_with(labels__0__key=SURROGATE),
                 _spec_with(labels__0__value=SURROGATE), _spec_with(labels={SURROGATE: "x"}),
                 _spec_with(elasticIpPool__tagSelector__tagKey=SURROGATE),
                 _spec_with(elasticIpPool__tagSelector__tagValue=SURROGATE), _spec_with(cluster=SURROGATE),
                 _spec_with(region=SURROGATE), _spec_with(enabled=SURROGATE)]


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    '{"launchSpec": ' * 50_000 + "{}" + "}" * 50_000,
    *(json.dumps(spec) for spec in HOSTILE_SPECS),  # json.dumps writes the surrogate as the escape \ud800
    *(json.dumps({"launchSpec": spec}) for spec in HOSTILE_SPECS),
])
def test_launch_spec_put_refuses_deep_or_surrogate_bodies_in_json(web_world: WebWorld, operator_api: Api,
                                                                   body: str) -> None:
    response = operator_api.put("/api/v1/launch-specs/ingress", body, raw=True)
    assert response.status_code == 400 and response["Content-Type"] == "application/json", response.content[:300]
    problems = response.json()["problems"]
    assert problems and SURROGATE not in json.dumps(problems, ensure_ascii=False)


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    *(json.dumps({"launchSpecs": [spec], "dryRun": True}) for spec in HOSTILE_SPECS),
    json.dumps({"launchSpecs": [SPEC], "cluster": SURROGATE, "prune": True, "dryRun": True}),
    json.dumps({"launchSpecs": [SPEC], SURROGATE: True, "dryRun": True}),
])
def test_launch_spec_sync_refuses_deep_or_surrogate_bodies_in_json(web_world: WebWorld, operator_api: Api,
                                                                    body: str) -> None:
    response = operator_api.post("/api/v1/launch-specs:sync", body, raw=True)
    assert response.status_code == 400 and response["Content-Type"] == "application/json", response.content[:300]
    problems = response.json()["problems"]
    assert problems and SURROGATE not in json.dumps(problems, ensure_ascii=False)


# --- unknown paths and CSRF ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_not_found_answers_unsafe_methods_in_json_with_or_without_a_session(
    operator: User, operator_api: Api, method: str
) -> None:
    """The catch-all was CSRF-checked: an unsafe method on it answered Django's HTML CSRF page (403)."""
    anonymous = Client(enforce_csrf_checks=True)
    logged_in = Client(enforce_csrf_checks=True)
    logged_in.force_login(operator)
    for client, headers in ((anonymous, {}), (logged_in, {}), (operator_api.client, operator_api.headers)):
        response = getattr(client, method)("/api/v1/nothing-here", "{}", content_type="application/json",
                                           headers=headers)
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "no API endpoint at /api/v1/nothing-here; the reference is at /api/docs/"}


def _plain_api_view(request: HttpRequest) -> JsonResponse:
    """A plain Django view under /api/, CSRF-checked by the middleware (DRF's views check it themselves)."""
    return JsonResponse({"posted": True})


urlpatterns = [path("api/v1/plain", _plain_api_view), path("", include("eipdash.urls"))]


@pytest.mark.urls(__name__)
def test_csrf_failure_is_json_under_api_and_the_page_elsewhere(operator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    api = client.post("/api/v1/plain", "{}", content_type="application/json")
    assert api.status_code == 403 and api["Content-Type"] == "application/json"
    assert api.json() == {"detail": "CSRF Failed: CSRF cookie not set."}
    page = client.post(reverse("logout"))
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")
    assert b"CSRF verification failed" in page.content
