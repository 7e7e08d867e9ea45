"""The manual reassign in the web: who may, what the confirmation says, the request recorded and its task
enqueued in Redis, and how the status page follows the request.

The web never moves anything itself: a worker does (tests/workers/test_reassign.py for the move against the
emulators, tests/e2e/test_reassign_worker.py for the task on a real Celery worker). Here the outcome a
worker would write is written with the same service the worker uses.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from pools.models import Node, ReassignRequest
from pools.services import reassign_request_finish
from tests.fixtures.web import WebWorld, make_node

pytestmark = pytest.mark.django_db

TASK = "workers.tasks.reassign"


@pytest.fixture
def target(web_world: WebWorld) -> Node:
    return make_node("node-c", spec=web_world.spec, index=3, state=Node.State.READY)


def _urls(w: WebWorld) -> tuple[str, str, str]:
    allocation = w.eips[0].allocation_id
    return (
        reverse("eip-detail", args=[allocation]),
        reverse("eip-reassign", args=[allocation]),
        reverse("eip-reassign-confirm", args=[allocation]),
    )


def _status_url(request: ReassignRequest) -> str:
    return reverse("eip-reassign-status", args=[request.eip.allocation_id, request.pk])


def _take_queued(redis_url: str, request_id: int | None) -> list[dict[str, Any]]:
    """The reassign tasks for this request (None: for any) waiting in the broker's default queue; removed as
    they are read."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    found = []
    raws: list[str] = client.lrange("celery", 0, -1)  # type: ignore[assignment]  # sync client: a list
    for raw in raws:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != TASK:
            continue
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        if request_id is None or args == [request_id]:
            found.append(message)
            client.lrem("celery", 1, raw)
    return found


def test_anonymous_post_is_sent_to_login(client: Client, web_world: WebWorld) -> None:
    _, post_url, _ = _urls(web_world)
    response = client.post(post_url, {"node": "node-b"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not ReassignRequest.objects.exists()


def test_viewer_is_forbidden_on_the_server(viewer_client: Client, web_world: WebWorld) -> None:
    detail, post_url, confirm = _urls(web_world)
    assert viewer_client.post(post_url, {"node": "node-b"}).status_code == 403
    assert viewer_client.get(confirm, {"node": "node-b"}).status_code == 403
    assert not ReassignRequest.objects.exists()
    # The viewer sees no form, only why.
    html = viewer_client.get(detail).content.decode()
    assert "Only operators can move" in html and "Reassign…" not in html


def test_get_is_not_allowed_on_the_action(operator_client: Client, web_world: WebWorld) -> None:
    _, post_url, _ = _urls(web_world)
    assert operator_client.get(post_url, {"node": "node-b"}).status_code == 405
    assert not ReassignRequest.objects.exists()


def test_operator_sees_only_eligible_targets(operator_client: Client, web_world: WebWorld, target: Node) -> None:
    make_node("node-draining", spec=web_world.spec, index=4, state=Node.State.DRAINING, draining=True)
    make_node("node-dead", spec=web_world.spec, index=5, instance_state="terminated")
    detail, _, _ = _urls(web_world)
    html = operator_client.get(detail).content.decode()
    assert '<option value="node-b">' in html and '<option value="node-c">' in html
    # node-a holds the EIP already; the others are draining or dead.
    for name in ("node-a", "node-draining", "node-dead"):
        assert f'<option value="{name}">' not in html


def test_confirmation_says_what_will_happen(operator_client: Client, web_world: WebWorld, target: Node) -> None:
    _, _, confirm = _urls(web_world)
    html = operator_client.get(confirm, {"node": "node-c"}).content.decode()
    assert "Move 203.0.113.1 to node-c?" in html
    assert "node-a</strong> gets the startup taint back first" in html and "then loses this IP" in html
    # eip 2 is free: the old node gets it on the next pass.
    assert "another free EIP of the pool (1 free now)" in html
    assert 'name="csrfmiddlewaretoken"' in html and 'value="node-c"' in html and 'id="reassign-confirm"' in html
    # Under htmx the same confirmation is a dialog fragment, not a page.
    fragment = operator_client.get(confirm, {"node": "node-c"}, headers={"HX-Request": "true"}).content.decode()
    # A modal: closed in the markup, opened by static/pools/eipdash.js with showModal(); the page is open.
    assert "<dialog data-modal" in fragment and "<dialog open" not in fragment
    assert '<dialog open id="reassign-dialog"' in html


def test_confirmation_warns_when_the_pool_is_empty(operator_client: Client, web_world: WebWorld, target) -> None:
    from tests.fixtures.web import assign

    assign(web_world.eips[1], web_world.nodes[1])
    _, _, confirm = _urls(web_world)
    html = operator_client.get(confirm, {"node": "node-c"}).content.decode()
    assert "no free EIP" in html


def test_an_eip_in_conflict_is_not_offered_and_not_accepted(
    operator_client: Client, web_world: WebWorld, target: Node, django_capture_on_commit_callbacks
) -> None:
    # The free EIP shows up associated in AWS with no record of eipdash: conflict.
    conflicted = web_world.eips[1]
    conflicted.association_id, conflicted.eni_id, conflicted.private_ip = "eipassoc-x", "eni-bastion", "10.9.9.9"
    conflicted.save()
    allocation = conflicted.allocation_id
    html = operator_client.get(reverse("eip-detail", args=[allocation])).content.decode()
    assert 'id="reassign-conflict"' in html and "Reassign…" not in html
    dialog = operator_client.get(reverse("eip-reassign-confirm", args=[allocation]), {"node": "node-c"},
                                 headers={"HX-Request": "true"}).content.decode()
    assert 'id="reassign-error"' in dialog and "in conflict" in dialog and 'id="reassign-confirm"' not in dialog
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        page = operator_client.post(reverse("eip-reassign", args=[allocation]), {"node": "node-c"})
    assert page.status_code == 409 and "in conflict" in page.content.decode()
    assert not ReassignRequest.objects.exists() and not callbacks


def test_the_request_is_recorded_and_its_task_enqueued(
    operator_client: Client, operator: User, web_world: WebWorld, target: Node, redis_url: str,
    django_capture_on_commit_callbacks,
) -> None:
    _, post_url, _ = _urls(web_world)
    # A shared Redis (CI's) may hold tasks that earlier tests queued; request ids repeat on PostgreSQL.
    _take_queued(redis_url, None)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = operator_client.post(post_url, {"node": "node-c"})
    (request,) = ReassignRequest.objects.all()
    assert (request.eip_id, request.node_name, request.actor, request.state) == (
        web_world.eips[0].pk, "node-c", operator.username, ReassignRequest.State.PENDING)
    assert len(callbacks) == 1  # enqueued on commit, so a fast worker finds the row
    assert len(_take_queued(redis_url, request.pk)) == 1
    # Without JS: POST, redirect, and a status page that says where it stands, with a link to look again.
    assert response.status_code == 302 and response["Location"] == _status_url(request)
    page = operator_client.get(_status_url(request)).content.decode()
    assert "Waiting for a worker" in page and f'href="{_status_url(request)}"' in page


def test_htmx_gets_a_status_that_polls_until_the_move_ends(
    operator_client: Client, web_world: WebWorld, target: Node, redis_url: str, django_capture_on_commit_callbacks,
) -> None:
    _, post_url, _ = _urls(web_world)
    htmx = {"HX-Request": "true"}
    with django_capture_on_commit_callbacks(execute=True):
        fragment = operator_client.post(post_url, {"node": "node-c"}, headers=htmx).content.decode()
    request = ReassignRequest.objects.get()
    _take_queued(redis_url, request.pk)
    assert 'id="reassign-status"' in fragment and f'hx-get="{_status_url(request)}"' in fragment
    assert 'hx-trigger="every 1s"' in fragment
    # Refused by the worker: the reason in place, and the polling stops.
    reassign_request_finish(request_id=request.pk, state="refused", message="node-c already has an EIP (203.0.113.9).")
    refused = operator_client.get(_status_url(request), headers=htmx).content.decode()
    assert 'id="reassign-error"' in refused and "node-c already has an EIP" in refused and "hx-trigger" not in refused


def _a_finished_move(client: Client, w: WebWorld, redis_url: str, capture: Any) -> ReassignRequest:
    """A move to node-c asked through the page, and done by a worker."""
    with capture(execute=True):
        client.post(_urls(w)[1], {"node": "node-c"})
    request = ReassignRequest.objects.get()
    _take_queued(redis_url, request.pk)
    reassign_request_finish(request_id=request.pk, state="done", message="203.0.113.1 moved to node-c.")
    return request


def test_a_finished_move_sends_the_page_back_to_the_eip(
    operator_client: Client, web_world: WebWorld, target: Node, redis_url: str, django_capture_on_commit_callbacks,
) -> None:
    detail = _urls(web_world)[0]
    request = _a_finished_move(operator_client, web_world, redis_url, django_capture_on_commit_callbacks)
    response = operator_client.get(_status_url(request), headers={"HX-Request": "true"})
    assert response["HX-Redirect"].startswith(detail)
    assert "moved to node-c" in operator_client.get(response["HX-Redirect"]).content.decode()


def test_eip_reassign_status_says_the_move_on_every_page_its_polls_send_the_browser_to(
    operator_client: Client, web_world: WebWorld, target: Node, redis_url: str, django_capture_on_commit_callbacks,
) -> None:
    """htmx queues the poll that comes due while one is in flight, and sends it as soon as the first answers:
    so a slow answer that sends the page back to the EIP is followed by a second one, which starts the page
    load again. CI's browser met this order: both polls answered, the first page load took the word of the
    move (a flash message, in a cookie) and the second page came without it. Each page says it by itself."""
    detail = _urls(web_world)[0]
    request = _a_finished_move(operator_client, web_world, redis_url, django_capture_on_commit_callbacks)
    htmx = {"HX-Request": "true"}
    first = operator_client.get(_status_url(request), headers=htmx)["HX-Redirect"]
    queued = operator_client.get(_status_url(request), headers=htmx)["HX-Redirect"]
    operator_client.get(first)  # the first page load, cut short by the second redirect
    assert "203.0.113.1 moved to node-c." in operator_client.get(queued).content.decode()
    # Another EIP's page, or a move not done, says nothing of it.
    other = reverse("eip-detail", args=[web_world.eips[1].allocation_id])
    assert "moved to node-c" not in operator_client.get(f"{other}?moved={request.pk}").content.decode()
    assert operator_client.get(f"{detail}?moved=%C2%B2").status_code == 200


def test_a_request_is_only_found_under_its_own_eip(operator_client: Client, web_world: WebWorld) -> None:
    request = ReassignRequest.objects.create(eip=web_world.eips[0], node_name="node-b", actor="x",
                                             created_at=web_world.eips[0].last_seen_at)
    other = reverse("eip-reassign-status", args=[web_world.eips[1].allocation_id, request.pk])
    assert operator_client.get(other).status_code == 404


def test_a_broker_that_does_not_answer_fails_the_request_visibly(
    operator_client: Client, web_world: WebWorld, target: Node, settings, django_capture_on_commit_callbacks,
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    _, post_url, _ = _urls(web_world)
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(post_url, {"node": "node-c"}, headers={"HX-Request": "true"})
    request = ReassignRequest.objects.get()
    assert request.state == ReassignRequest.State.FAILED and "queue did not answer" in request.message
    # The dialog's next poll shows it (outside tests the enqueue runs before the answer is rendered).
    fragment = operator_client.get(_status_url(request), headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and 'id="reassign-error"' in fragment.content.decode()


def test_missing_node_is_refused_without_a_request(operator_client: Client, web_world: WebWorld) -> None:
    _, post_url, _ = _urls(web_world)
    assert operator_client.post(post_url, {}).status_code == 409
    assert not ReassignRequest.objects.exists()


def test_csrf_is_enforced(operator: User, web_world: WebWorld, target: Node) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    _, post_url, _ = _urls(web_world)
    assert client.post(post_url, {"node": "node-c"}).status_code == 403
    assert not ReassignRequest.objects.exists()


# --- A reassign that cannot be fumbled (issue 20, item 4) ------------------------------------------


def _options(html: str) -> list[str]:
    """The target nodes a select offers, by value."""
    return [part.split('"')[0] for part in html.split('<option value="')[1:] if part.split('"')[0]]


def test_eip_detail_puts_the_reassign_action_above_the_history(operator_client: Client, web_world: WebWorld,
                                                                target: Node) -> None:
    detail, _, _ = _urls(web_world)
    html = operator_client.get(detail).content.decode()
    # On a phone the form was 24 Tab stops and 4,600 px down, below the whole history.
    assert html.index('id="reassign"') < html.index("History of this EIP")


def test_eip_reassign_targets_leave_out_nodes_a_worker_would_refuse(operator_client: Client, web_world: WebWorld,
                                                                    target: Node) -> None:
    from pools.models import LaunchSpec
    from tests.fixtures.web import make_eip

    spec = web_world.spec
    make_node("node-no-ip", spec=spec, index=6, private_ip="")  # no primary private IPv4 yet: nothing to put it on
    make_node("node-autoscaled", spec=spec, index=7, draining=True, drain_reason="cluster-autoscaler")
    eni_taken = make_node("node-eni-taken", spec=spec, index=8)
    make_eip(9, association_id="eipassoc-raw", eni_id=eni_taken.eni_id, private_ip=eni_taken.private_ip)
    LaunchSpec.objects.create(name="egress-b", cluster=web_world.cluster, labels={"team": "b"}, tag_key="other")
    make_node("node-two-specs", spec=spec, index=9, labels={"team": "b"})
    detail, _, confirm = _urls(web_world)
    page = operator_client.get(detail).content.decode()
    dialog = operator_client.get(confirm, headers={"HX-Request": "true"}).content.decode()
    assert _options(page) == _options(dialog) == ["node-b", "node-c"]


def test_eip_reassign_confirm_opens_on_the_target_field_or_cancel(operator_client: Client, web_world: WebWorld,
                                                                  target: Node) -> None:
    _, _, confirm = _urls(web_world)
    htmx = {"HX-Request": "true"}
    # Opened without a target (the inventory's row action): a choice of fresh targets, no Move yet.
    choose = operator_client.get(confirm, headers=htmx)
    html = choose.content.decode()
    assert choose.status_code == 200 and "<dialog data-modal" in html
    assert '<select name="node" id="reassign-node" required autofocus>' in html
    assert 'id="reassign-confirm"' not in html and _options(html) == ["node-b", "node-c"]
    # With a target: Move is there, but focus starts on Cancel, so Enter, Enter moves nothing.
    html = operator_client.get(confirm, {"node": "node-c"}, headers=htmx).content.decode()
    move = html.split('id="reassign-confirm"')[1].split(">")[0]
    cancel = html.split('id="reassign-cancel"')[1].split(">")[0]
    assert "autofocus" in cancel and "autofocus" not in move


def test_eip_reassign_confirm_offers_fresh_targets_when_the_chosen_one_drains(
    operator_client: Client, web_world: WebWorld, target: Node
) -> None:
    _, _, confirm = _urls(web_world)
    # The page listed node-c; it was cordoned since (what the last pass wrote).
    Node.objects.filter(pk=target.pk).update(draining=True, drain_reason="cordoned", state=Node.State.DRAINING)
    html = operator_client.get(confirm, {"node": "node-c"}, headers={"HX-Request": "true"}).content.decode()
    assert 'id="reassign-confirm"' not in html and 'id="reassign-error"' in html
    assert "node-c cannot take 203.0.113.1 now" in html
    assert _options(html) == ["node-b"]


def test_eip_reassign_refuses_a_target_no_longer_offered_without_a_request(
    operator_client: Client, web_world: WebWorld, target: Node, django_capture_on_commit_callbacks
) -> None:
    _, post_url, _ = _urls(web_world)
    Node.objects.filter(pk=target.pk).update(draining=True, drain_reason="cordoned", state=Node.State.DRAINING)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        page = operator_client.post(post_url, {"node": "node-c"})
        fragment = operator_client.post(post_url, {"node": "node-c"}, headers={"HX-Request": "true"})
    assert page.status_code == 409 and "node-c cannot take 203.0.113.1 now" in page.content.decode()
    html = fragment.content.decode()
    assert fragment["HX-Retarget"] == "#reassign-dialog" and 'id="reassign-confirm"' not in html
    assert _options(html) == ["node-b"]
    assert not ReassignRequest.objects.exists() and not callbacks


def test_eip_reassign_status_after_a_refusal_hides_move_and_offers_fresh_targets(
    operator_client: Client, web_world: WebWorld, target: Node, redis_url: str, django_capture_on_commit_callbacks,
) -> None:
    _, post_url, _ = _urls(web_world)
    htmx = {"HX-Request": "true"}
    with django_capture_on_commit_callbacks(execute=True):
        following = operator_client.post(post_url, {"node": "node-c"}, headers=htmx)
    request = ReassignRequest.objects.get()
    _take_queued(redis_url, request.pk)
    # While the worker moves it, the dialog follows the request: Move is gone, it cannot be sent twice.
    assert following["HX-Retarget"] == "#reassign-dialog"
    assert 'id="reassign-status"' in following.content.decode()
    assert 'id="reassign-confirm"' not in following.content.decode()
    # The worker's fresh reading finds node-c draining (its refresh writes the row), and refuses.
    Node.objects.filter(pk=target.pk).update(draining=True, drain_reason="cordoned", state=Node.State.DRAINING)
    reassign_request_finish(request_id=request.pk, state="refused", message="node-c is draining.")
    refused = operator_client.get(_status_url(request), headers=htmx)
    html = refused.content.decode()
    assert refused["HX-Retarget"] == "#reassign-dialog" and refused["HX-Reswap"] == "outerHTML"
    assert "Refused, nothing was changed: node-c is draining." in html and 'id="reassign-confirm"' not in html
    assert _options(html) == ["node-b"] and "autofocus" in html.split('id="reassign-node"')[1].split(">")[0]


def test_eip_reassign_confirm_works_without_javascript(operator_client: Client, web_world: WebWorld,
                                                       target: Node) -> None:
    _, _, confirm = _urls(web_world)
    html = operator_client.get(confirm).content.decode()
    assert '<dialog open id="reassign-dialog"' in html and _options(html) == ["node-b", "node-c"]
    # The choice goes to the confirmation, which the operator then sends.
    assert f'action="{confirm}"' in html and 'method="get"' in html.split('id="reassign-dialog"')[1]


def test_eip_list_offers_reassign_per_assignable_row_to_operators(
    operator_client: Client, viewer_client: Client, web_world: WebWorld, target: Node
) -> None:
    conflicted = make_node("node-x", spec=None, index=10)
    from tests.fixtures.web import make_eip

    make_eip(4, association_id="eipassoc-y", eni_id=conflicted.eni_id, private_ip=conflicted.private_ip)
    html = operator_client.get(reverse("eip-list")).content.decode()

    def row(index: int) -> str:
        return html.split(f'id="eip-eipalloc-{index:017x}"')[1].split("</tr>")[0]

    for index in (1, 2):  # assigned, free
        url = reverse("eip-reassign-confirm", args=[f"eipalloc-{index:017x}"])
        assert f'href="{url}"' in row(index) and "Reassign…" in row(index), index
    for index in (3, 4):  # gone, in conflict: nothing to move by hand
        assert "Reassign…" not in row(index), index
    assert "Reassign…" not in viewer_client.get(reverse("eip-list")).content.decode()
