"""The manual reassign: who may, what the confirmation says, and how the answer is shown.

The executor is replaced at the view's one seam (`pools.views._executor`): these tests are about the
web layer. The engine-level reassign (AWS and Kubernetes state) is tested in tests/workers/.
"""

from __future__ import annotations

import types

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from pools.models import Node
from tests.fixtures.web import WebWorld, make_node

pytestmark = pytest.mark.django_db


class Refused(Exception):
    pass


@pytest.fixture
def fake_executor(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    calls: list[dict[str, str]] = []
    fake = types.SimpleNamespace(ReassignRefused=Refused, calls=calls, refuse_with=None)

    def reassign_eip(*, allocation_id: str, node_name: str, actor: str) -> None:
        calls.append({"allocation_id": allocation_id, "node_name": node_name, "actor": actor})
        if fake.refuse_with:
            raise Refused(fake.refuse_with)

    fake.reassign_eip = reassign_eip
    monkeypatch.setattr("pools.views._executor", lambda: fake)
    return fake


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


def test_anonymous_post_is_sent_to_login(client: Client, web_world: WebWorld, fake_executor) -> None:
    _, post_url, _ = _urls(web_world)
    response = client.post(post_url, {"node": "node-b"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert fake_executor.calls == []


def test_viewer_is_forbidden_on_the_server(viewer_client: Client, web_world: WebWorld, fake_executor) -> None:
    detail, post_url, confirm = _urls(web_world)
    assert viewer_client.post(post_url, {"node": "node-b"}).status_code == 403
    assert viewer_client.get(confirm, {"node": "node-b"}).status_code == 403
    assert fake_executor.calls == []
    # The viewer sees no form, only why.
    html = viewer_client.get(detail).content.decode()
    assert "Only operators can move" in html and "Reassign…" not in html


def test_get_is_not_allowed_on_the_action(operator_client: Client, web_world: WebWorld, fake_executor) -> None:
    _, post_url, _ = _urls(web_world)
    assert operator_client.get(post_url, {"node": "node-b"}).status_code == 405
    assert fake_executor.calls == []


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
    assert "node-a</strong> loses this IP" in html
    # eip 2 is free: the old node gets it on the next pass.
    assert "another free EIP of the pool (1 free now)" in html
    assert 'name="csrfmiddlewaretoken"' in html and 'value="node-c"' in html
    # Under htmx the same confirmation is a dialog fragment, not a page.
    fragment = operator_client.get(confirm, {"node": "node-c"}, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div class="dialog-backdrop"') and "<dialog open" in fragment


def test_confirmation_warns_when_the_pool_is_empty(operator_client: Client, web_world: WebWorld, target) -> None:
    from tests.fixtures.web import assign

    assign(web_world.eips[1], web_world.nodes[1])
    _, _, confirm = _urls(web_world)
    html = operator_client.get(confirm, {"node": "node-c"}).content.decode()
    assert "no free EIP" in html


def test_operator_moves_with_their_name_as_actor(
    operator_client: Client, operator: User, web_world: WebWorld, target: Node, fake_executor
) -> None:
    detail, post_url, _ = _urls(web_world)
    response = operator_client.post(post_url, {"node": "node-c"})
    assert response.status_code == 302 and response["Location"] == detail
    assert fake_executor.calls == [
        {"allocation_id": web_world.eips[0].allocation_id, "node_name": "node-c", "actor": operator.username}
    ]
    assert "moved to node-c" in operator_client.get(detail).content.decode()


def test_htmx_success_redirects_the_client(operator_client: Client, web_world: WebWorld, target, fake_executor):
    detail, post_url, _ = _urls(web_world)
    response = operator_client.post(post_url, {"node": "node-c"}, headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == detail


def test_refusal_is_shown_inline(operator_client: Client, web_world: WebWorld, target: Node, fake_executor) -> None:
    fake_executor.refuse_with = "node-c already has an EIP (203.0.113.9)."
    _, post_url, _ = _urls(web_world)
    page = operator_client.post(post_url, {"node": "node-c"})
    assert page.status_code == 409
    assert "node-c already has an EIP (203.0.113.9)." in page.content.decode()
    fragment = operator_client.post(post_url, {"node": "node-c"}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200  # htmx swaps 2xx only
    assert 'id="reassign-error"' in fragment.content.decode()
    assert "already has an EIP" in fragment.content.decode()


def test_missing_node_is_refused_without_calling_the_executor(
    operator_client: Client, web_world: WebWorld, fake_executor
) -> None:
    _, post_url, _ = _urls(web_world)
    assert operator_client.post(post_url, {}).status_code == 409
    assert fake_executor.calls == []


def test_csrf_is_enforced(operator: User, web_world: WebWorld, target: Node, fake_executor) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    _, post_url, _ = _urls(web_world)
    assert client.post(post_url, {"node": "node-c"}).status_code == 403
    assert fake_executor.calls == []
