"""API tokens: the bearer scheme (valid, expired, revoked, wrong), roles, the `api_token` command and the
user's tokens page."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools.api.tokens import token_create
from pools.models import ApiToken
from tests.api.conftest import Api
from tests.fixtures.web import WebWorld

SPECS = "/api/v1/launch-specs/"


def test_a_valid_token_reads_with_either_keyword(web_world: WebWorld, viewer: User) -> None:
    secret = token_create(user=viewer).secret
    for keyword in ("Bearer", "Token", "bearer"):
        response = Api(secret, keyword=keyword).get(SPECS)
        assert response.status_code == 200, (keyword, response.content)
        assert [d["launchSpec"]["name"] for d in response.json()["launchSpecs"]] == ["egress"]
    token = ApiToken.objects.get()
    assert token.last_used_at is not None and token.user == viewer


def test_only_the_hash_of_the_secret_is_stored(viewer: User) -> None:
    new = token_create(user=viewer, name="ci")
    row = ApiToken.objects.values().get()
    assert new.secret.startswith("eipd_") and len(new.secret) > 40
    assert row["key_hash"] == hashlib.sha256(new.secret.encode()).hexdigest()
    assert not any(new.secret in str(value) for value in row.values())
    assert new.secret.startswith(row["prefix"]) and len(row["prefix"]) == 13


@pytest.mark.parametrize("header, says", [
    ("Bearer eipd_wrongwrongwrongwrongwrongwrongwrongwrong", "invalid API token"),
    ("Bearer not-even-ours", "invalid API token"),
    ("Bearer", "one token"),  # nothing after the keyword
    ("Bearer two words", "one token"),
])
def test_a_wrong_token_is_401_with_the_reason(viewer: User, header: str, says: str) -> None:
    response = Client().get(SPECS, headers={"Authorization": header})
    assert response.status_code == 401
    assert says in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_is_401_and_says_so(viewer: User) -> None:
    new = token_create(user=viewer, expires_in=dt.timedelta(days=1))
    ApiToken.objects.filter(pk=new.token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = Api(new.secret).get(SPECS)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_revoked_token_is_401_and_says_so(viewer: User) -> None:
    new = token_create(user=viewer)
    assert Api(new.secret).get(SPECS).status_code == 200
    call_command("api_token", "revoke", new.token.prefix, stdout=io.StringIO())
    response = Api(new.secret).get(SPECS)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_an_inactive_users_token_is_refused(viewer: User) -> None:
    secret = token_create(user=viewer).secret
    User.objects.filter(pk=viewer.pk).update(is_active=False)
    assert Api(secret).get(SPECS).status_code == 401


def test_no_credentials_is_a_json_401_never_the_login_page(db: None) -> None:
    for path in (SPECS, "/api/v1/eips/", "/api/v1/launch-specs/egress", "/api/schema/", "/api/docs/"):
        response = Client().get(path)
        assert response.status_code == 401, path
        assert "json" in response["Content-Type"] and "detail" in response.json(), path


def test_an_account_in_no_group_is_403_like_the_dashboard(stranger_api: Api, stranger: User) -> None:
    response = stranger_api.get(SPECS)
    assert response.status_code == 403 and "no group" in response.json()["detail"]
    client = Client()
    client.force_login(stranger)
    assert client.get(SPECS).status_code == 403
    assert client.get("/eips/").status_code == 403  # the dashboard's own answer


def test_unknown_paths_under_api_are_json_404(viewer_api: Api) -> None:
    for path in ("/api/v1/nope", "/api/v1/launch-specs", "/api/"):
        response = viewer_api.get(path)
        assert response.status_code == 404 and "no API endpoint" in response.json()["detail"], path


# --- manage.py api_token -----------------------------------------------------------------------------


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_creates_lists_and_revokes(viewer: User, operator: User) -> None:
    out, err = _run("create", viewer.username, "--name", "terraform", "--expires", "90d")
    secret = out.strip()
    assert secret.startswith("eipd_") and "\n" not in secret and "shown only now" in err
    token = ApiToken.objects.get()
    assert token.name == "terraform" and token.user == viewer
    assert dt.timedelta(days=89, hours=23) < token.expires_at - token.created_at <= dt.timedelta(days=90)
    assert Api(secret).get(SPECS).status_code == 200
    _run("create", operator.username)

    header, *rows = _run("list")[0].splitlines()
    assert header.split("\t") == ["ID", "PREFIX", "NAME", "USER", "CREATED", "EXPIRES", "LAST_USED", "REVOKED",
                                  "STATE"]
    assert len(rows) == 2
    mine = [row.split("\t") for row in _run("list", viewer.username)[0].splitlines()[1:]]
    assert len(mine) == 1 and mine[0][1] == token.prefix and mine[0][2] == "terraform" and mine[0][8] == "active"
    assert mine[0][6] != "-"  # last used: the call above
    assert secret not in _run("list")[0]

    assert "revoked" in _run("revoke", token.prefix)[0]
    assert Api(secret).get(SPECS).status_code == 401
    assert _run("list", viewer.username)[0].splitlines()[1].split("\t")[8] == "revoked"
    other = ApiToken.objects.get(user=operator)
    _run("revoke", str(other.pk))
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 0


@pytest.mark.parametrize("args, says", [
    (("create", "nobody"), "no user 'nobody'"),
    (("create", "victor-viewer", "--expires", "90"), "expiry '90'"),
    (("create", "victor-viewer", "--expires", "0d"), "expiry '0d'"),
    (("revoke", "eipd_nothere1"), "no API token"),
    (("revoke", "garbage"), "give a token's id or its prefix"),
])
def test_the_command_refuses_with_exit_2(viewer: User, args: tuple[str, ...], says: str) -> None:
    with pytest.raises(CommandError, match=says) as raised:
        _run(*args)
    assert raised.value.returncode == 2
    assert not ApiToken.objects.exists()


def test_revoking_twice_says_so(viewer: User) -> None:
    token = token_create(user=viewer).token
    _run("revoke", str(token.pk))
    with pytest.raises(CommandError, match="revoked already"):
        _run("revoke", str(token.pk))


# --- the tokens page ----------------------------------------------------------------------------------


def test_the_page_creates_a_token_and_shows_its_secret_once(viewer_client: Client, viewer: User) -> None:
    page = viewer_client.get(reverse("api-tokens"))
    assert page.status_code == 200 and "You have no API token yet" in page.content.decode()
    assert reverse("api-tokens") in page.content.decode()  # the nav link
    created = viewer_client.post(reverse("api-tokens"), {"name": "laptop", "expires": "30d"})
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    html = created.content.decode()
    secret = html.split('id="token-secret">')[1].split("<")[0]
    assert secret.startswith("eipd_")
    token = ApiToken.objects.get()
    assert token.user == viewer and token.name == "laptop" and token.expires_at is not None
    assert Api(secret).get(SPECS).status_code == 200
    again = viewer_client.get(reverse("api-tokens")).content.decode()
    assert secret not in again and token.prefix in again and "laptop" in again


def test_the_page_revokes_only_the_users_own_tokens(viewer_client: Client, viewer: User, operator: User) -> None:
    mine = token_create(user=viewer)
    theirs = token_create(user=operator)
    page = viewer_client.get(reverse("api-tokens")).content.decode()
    assert mine.token.prefix in page and theirs.token.prefix not in page
    assert viewer_client.post(reverse("api-token-revoke", args=[theirs.token.pk])).status_code == 404
    assert viewer_client.post(reverse("api-token-revoke", args=[mine.token.pk])).status_code == 302
    assert Api(mine.secret).get(SPECS).status_code == 401
    assert Api(theirs.secret).get(SPECS).status_code == 200  # not touched


def test_the_page_needs_a_login_and_a_group(client: Client, stranger: User) -> None:
    response = client.get(reverse("api-tokens"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(stranger)
    assert client.get(reverse("api-tokens")).status_code == 403
    assert client.post(reverse("api-tokens"), {"name": "x", "expires": ""}).status_code == 403
    assert not ApiToken.objects.exists()


def test_the_page_checks_csrf(viewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    assert client.post(reverse("api-tokens"), {"name": "x", "expires": ""}).status_code == 403
    assert not ApiToken.objects.exists()


def test_a_user_has_at_most_so_many_live_tokens(viewer: User) -> None:
    from pools.api.tokens import TOKENS_PER_USER_MAX, TokenError, token_revoke

    tokens = [token_create(user=viewer).token for _ in range(TOKENS_PER_USER_MAX)]
    with pytest.raises(TokenError, match=f"the most allowed \\({TOKENS_PER_USER_MAX}\\): revoke one first"):
        token_create(user=viewer)
    assert ApiToken.objects.filter(user=viewer).count() == TOKENS_PER_USER_MAX
    token_revoke(token=tokens[0])
    token_create(user=viewer)  # a revoked one does not count
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("api_token", "create", viewer.username, stdout=out, stderr=err)
    assert "revoke one first" in str(refused.value)
