"""The manual reassign end to end: the web records the request and enqueues it, a real Celery worker makes
the move against the EC2 and Kubernetes emulators, and the status page shows how it ended."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from pools import services
from pools.models import ElasticIP, Event, ReassignRequest
from tests.e2e.stack import Stack
from tests.fixtures.polling import eventually
from tests.fixtures.world import TAINT, World
from workers import executor

pytestmark = pytest.mark.e2e


def test_a_move_asked_in_the_web_is_made_by_the_worker(stack: Stack, world_tx: World, operator: User) -> None:
    world = world_tx
    spec = world.spec()
    (allocation_id,) = world.eips(1)
    world.node("holder")
    executor.reconcile_spec(spec.pk)
    world.node("waiting")
    executor.reconcile_spec(spec.pk)  # the pool is exhausted: waiting keeps its taint
    assert world.eip_on("holder") == allocation_id and TAINT in world.taints("waiting")
    stack.worker()
    client = Client()
    client.force_login(operator)

    response = client.post(reverse("eip-reassign", args=[allocation_id]), {"node": "waiting"})
    request = ReassignRequest.objects.get()
    assert response.status_code == 302 and request.actor == operator.username
    eventually(lambda: ReassignRequest.objects.get(pk=request.pk).is_finished, timeout=60, stack=stack,
               what="the worker finished the request")
    request.refresh_from_db()
    assert request.state == ReassignRequest.State.DONE, request.message

    # AWS and Kubernetes: the EIP on the target, which lost its taint; the old node tainted (I1).
    assert world.eip_on("waiting") == allocation_id and world.eip_on("holder") is None
    assert TAINT not in world.taints("waiting") and TAINT in world.taints("holder")
    assert world.labels("waiting")["eipdash.io/eip"] == world.address(allocation_id)["PublicIp"]
    # The operator is the actor of the move, and no pass had to adopt it.
    assert Event.objects.get(kind="reassigned").actor == operator.username
    assert not Event.objects.filter(kind="adopted").exists()
    page = client.get(reverse("eip-reassign-status", args=[allocation_id, request.pk])).content.decode()
    assert 'id="reassign-done"' in page and "moved to waiting" in page


def test_a_refusal_on_the_worker_is_shown_and_changes_nothing(stack: Stack, world_tx: World, operator: User) -> None:
    world = world_tx
    spec = world.spec()
    first, second = world.eips(2)
    world.node("a")
    world.node("b")
    executor.reconcile_spec(spec.pk)
    before = world.all_associations()
    stack.worker()
    client = Client()
    client.force_login(operator)
    # b already holds an EIP: the page no longer offers it (and refuses it up front), but a request sent on an
    # older view (the API's, or a page read before b got its EIP) reaches the worker, which decides on the
    # world as it is.
    eip = ElasticIP.objects.get(allocation_id=world.eip_on("a"))
    services.reassign_request_submit(eip=eip, node_name="b", actor=operator.username)
    request = ReassignRequest.objects.get()
    eventually(lambda: ReassignRequest.objects.get(pk=request.pk).is_finished, timeout=60, stack=stack,
               what="the worker finished the request")
    request.refresh_from_db()
    assert request.state == ReassignRequest.State.REFUSED and "already has an EIP" in request.message
    assert world.all_associations() == before and sorted(before) == sorted([first, second])
    assert TAINT not in world.taints("a") and TAINT not in world.taints("b")
    status = client.get(reverse("eip-reassign-status", args=[request.eip.allocation_id, request.pk]),
                        headers={"HX-Request": "true"}).content.decode()
    assert 'id="reassign-error"' in status and "already has an EIP" in status
