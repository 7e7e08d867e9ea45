"""The admin's writes (clusters, users' roles) are events of the history with the admin as actor."""

from __future__ import annotations

import getpass
import io
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from pools.models import Cluster, Event
from tests.fixtures.web import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("sam-super", password=PASSWORD))
    return client


def test_a_cluster_added_changed_and_deleted_in_the_admin_is_an_event_each(admin_client: Client) -> None:
    add = {"name": "eu", "region": "eu-west-1", "kube_context": "eu"}
    assert admin_client.post(reverse("admin:pools_cluster_add"), add).status_code == 302
    eu = Cluster.objects.get(name="eu")
    change = reverse("admin:pools_cluster_change", args=[eu.pk])
    assert admin_client.post(change, {**add, "kube_context": "eu-2"}).status_code == 302
    assert admin_client.post(change, {**add, "kube_context": "eu-2"}).status_code == 302  # unchanged: no event
    renamed = {**add, "kube_context": "eu-2", "name": "europe"}
    assert admin_client.post(change, renamed).status_code == 302
    add["name"] = "europe"
    assert admin_client.post(reverse("admin:pools_cluster_delete", args=[eu.pk]), {"post": "yes"}).status_code == 302
    events = list(Event.objects.order_by("id"))
    assert [(e.kind, e.cluster, e.region, e.actor) for e in events] == [
        ("cluster_added", "eu", "eu-west-1", "sam-super"), ("cluster_changed", "eu", "eu-west-1", "sam-super"),
        ("cluster_changed", "europe", "eu-west-1", "sam-super"),
        ("cluster_deleted", "europe", "eu-west-1", "sam-super")]
    assert events[1].reason == "cluster 'eu': kube context 'eu' -> 'eu-2'"
    assert events[2].reason == "cluster 'europe': name 'eu' -> 'europe'"  # a rename was no event before


def _user_form(user: User, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "username": user.username, "first_name": "", "last_name": "", "email": "",
        "is_active": "on", "groups": [], "user_permissions": [],
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def test_a_users_role_changed_in_the_admin_is_an_event(admin_client: Client, operator: User) -> None:
    """Groups are saved after the user row: the role is compared once both are saved."""
    change = reverse("admin:auth_user_change", args=[operator.pk])
    viewers = Group.objects.get(name="viewers").pk
    response = admin_client.post(change, _user_form(operator, groups=[viewers]))
    assert response.status_code == 302, response.content.decode()[:2000]
    admin_client.post(change, _user_form(operator, groups=[viewers], first_name="Olivia"))  # same role: no event
    admin_client.post(change, _user_form(operator, groups=[viewers], is_active=None))
    events = list(Event.objects.filter(kind="role_changed").order_by("id"))
    assert [(e.reason, e.actor) for e in events] == [
        (f"user '{operator.username}': operator -> viewer", "sam-super"),
        (f"user '{operator.username}': viewer -> inactive", "sam-super")]


def test_ensure_admin_records_the_admin_it_makes(tmp_path: Any) -> None:
    call_command("ensure_admin", "--password-file", str(tmp_path / "pw"), stdout=io.StringIO())
    call_command("ensure_admin", "--password-file", str(tmp_path / "pw"), stdout=io.StringIO())  # already so
    (event,) = Event.objects.filter(kind="role_changed")
    assert (event.reason, event.actor) == ("user 'admin': (new) -> admin", f"cli:{getpass.getuser()}")


def test_write_permissions_groups_and_deletions_in_the_admin_are_events(
    admin_client: Client, viewer: User, operator: User
) -> None:
    """A viewer given reassign_elasticip may move EIPs; a group's new permission or new name changes every
    member's role; a deleted account loses its tokens: none of these left a trace before."""
    from django.contrib.auth.models import Permission

    from pools.api.tokens import token_create
    from pools.models import ApiToken

    reassign = Permission.objects.get(codename="reassign_elasticip")
    viewers = Group.objects.get(name="viewers")
    change_user = reverse("admin:auth_user_change", args=[viewer.pk])
    form = _user_form(viewer, groups=[viewers.pk], user_permissions=[reassign.pk])
    assert admin_client.post(change_user, form).status_code == 302
    change = Permission.objects.get(codename="change_launchspec")
    group_form = {"name": "viewers", "permissions": [change.pk]}
    assert admin_client.post(reverse("admin:auth_group_change", args=[viewers.pk]), group_form).status_code == 302
    token_create(user=operator)
    delete = reverse("admin:auth_user_delete", args=[operator.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    reasons = [e.reason for e in Event.objects.filter(kind__in=["role_changed", "token_revoked"]).order_by("id")]
    assert reasons[0] == f"user '{viewer.username}': viewer -> viewer + pools.reassign_elasticip"
    assert reasons[1] == "group 'viewers': + pools.change_launchspec"
    assert reasons[2].endswith(f"of '{operator.username}' revoked: the account '{operator.username}' was deleted")
    assert reasons[3] == f"user '{operator.username}': operator -> deleted"
    assert not ApiToken.objects.exists() or not ApiToken.objects.filter(revoked_at__isnull=True).exists()
