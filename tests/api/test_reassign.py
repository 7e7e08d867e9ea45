"""POST /api/v1/eips/{id}/reassign: 202 with a status URL; refusals known up front in the dashboard's words;
and the move made by a real Celery worker against the EC2 and Kubernetes emulators, followed by polling."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from pools.models import ApiToken, ElasticIP, Event, ReassignRequest
from tests.api.conftest import Api, api_for
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.web import WebWorld
from tests.fixtures.world import TAINT, World
from workers import executor


def _reassign(api: Api, allocation_id: str, node: object):
    return api.post(f"/api/v1/eips/{allocation_id}/reassign", {"node": node})


def test_a_request_is_202_with_a_status_url_that_shows_it(web_world: WebWorld, operator_api: Api,
                                                         operator: User) -> None:
    eip = web_world.eips[0]
    response = _reassign(operator_api, eip.allocation_id, "node-b")
    assert response.status_code == 202, response.content
    request = ReassignRequest.objects.get()
    body = response.json()
    token = ApiToken.objects.get(user=operator)
    assert (request.node_name, request.actor, body["state"]) == (
        "node-b", f"{operator.username} (API token {token.prefix})", "pending")
    assert body["status"] == f"http://testserver/api/v1/eips/{eip.allocation_id}/reassign/{request.pk}"
    assert response["Location"] == body["status"]
    status = operator_api.client.get(body["status"], headers=operator_api.headers)
    assert status.status_code == 200 and status.json()["state"] == "pending" and status.json()["finished"] is False
    ReassignRequest.objects.filter(pk=request.pk).update(state="refused", message="node-b is draining")
    ended = operator_api.client.get(body["status"], headers=operator_api.headers).json()
    assert (ended["state"], ended["message"], ended["finished"]) == ("refused", "node-b is draining", True)
    # Another EIP's URL does not show this request.
    other = f"/api/v1/eips/{web_world.eips[1].allocation_id}/reassign/{request.pk}"
    assert operator_api.get(other).status_code == 404


def test_refusals_known_up_front_are_409_in_the_dashboards_words(web_world: WebWorld, operator_api: Api) -> None:
    gone = web_world.eips[2]
    response = _reassign(operator_api, gone.allocation_id, "node-b")
    assert response.status_code == 409
    assert response.json()["detail"] == f"{gone.public_ip} is gone from AWS or from the pool."
    conflict = web_world.eips[1]
    ElasticIP.objects.filter(pk=conflict.pk).update(association_id="eipassoc-foreign")
    response = _reassign(operator_api, conflict.allocation_id, "node-b")
    assert response.status_code == 409 and "is in conflict" in response.json()["detail"]
    for node in ("", None, "x" * 300):
        bad = _reassign(operator_api, web_world.eips[0].allocation_id, node)
        assert bad.status_code == 400 and bad.json()["detail"] == "Choose a target node.", node
    assert _reassign(operator_api, "eipalloc-nope", "node-b").status_code == 404
    assert not ReassignRequest.objects.exists()


def test_viewers_may_not_reassign(web_world: WebWorld, viewer_api: Api, stranger_api: Api) -> None:
    response = _reassign(viewer_api, web_world.eips[0].allocation_id, "node-b")
    assert response.status_code == 403 and "pools.reassign_elasticip" in response.json()["detail"]
    assert _reassign(stranger_api, web_world.eips[0].allocation_id, "node-b").status_code == 403
    assert not ReassignRequest.objects.exists()


@pytest.mark.e2e
def test_the_worker_makes_the_move_and_the_status_url_follows_it(stack: Stack, world_tx: World,
                                                                 operator: User) -> None:
    world = world_tx
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("holder")
    executor.reconcile_spec(spec.pk)
    world.node("waiting")
    executor.reconcile_spec(spec.pk)  # the pool is exhausted: waiting keeps its taint
    assert world.eip_on("holder") == allocation_id and TAINT in world.taints("waiting")
    stack.worker()
    api = api_for(operator, name="e2e")

    response = _reassign(api, allocation_id, "waiting")
    assert response.status_code == 202, response.content
    status_url = response.json()["status"]

    def finished() -> dict[str, object] | None:
        body = api.client.get(status_url, headers=api.headers).json()
        return body if body["finished"] else None

    body = eventually(finished, timeout=60, stack=stack, what="the status URL shows the move finished")
    assert body["state"] == "done", body
    # AWS and Kubernetes: the EIP on the target, which lost its taint; the old node tainted (I1).
    assert world.eip_on("waiting") == allocation_id and world.eip_on("holder") is None
    assert TAINT not in world.taints("waiting") and TAINT in world.taints("holder")
    # The actor says which of the operator's tokens asked (its clear prefix, never the secret).
    prefix = ApiToken.objects.get(user=operator, name="e2e").prefix
    assert Event.objects.get(kind="reassigned").actor == f"{operator.username} (API token {prefix})"
    eip = api.get(f"/api/v1/eips/{allocation_id}").json()
    assert (eip["node"], eip["state"]) == ("waiting", "assigned")


@pytest.mark.parametrize("body, says", [
    ('{"node": "\\ud800"}', "node: the node name must not contain control, bidi or surrogate characters"),
    ("[" * 100_000, "JSON nested deeper than"),
    ('{"node": "' + "a" * 3_000_000 + '"}', "the body is larger than"),
    ('{"node": ["a", "b"]}', "node: give the target node's name as a string"),
    ('{"node": 7}', "node: give the target node's name as a string"),
    ('{"node": "Node_B"}', "node: not a Kubernetes node name"),
    ('{"node": "b\\u202e"}', "node: the node name must not contain control, bidi or surrogate characters"),
    ("not json", "not valid JSON"),
    ('["node-b"]', "node: give the target node's name as a string"),
])
def test_a_bad_body_is_a_json_400_and_records_nothing(web_world: WebWorld, operator_api: Api, body: str,
                                                      says: str) -> None:
    response = operator_api.post(f"/api/v1/eips/{web_world.eips[0].allocation_id}/reassign", body, raw=True)
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert any(says in problem for problem in response.json()["problems"]), response.json()
    assert not ReassignRequest.objects.exists()
