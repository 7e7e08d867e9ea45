"""API tokens: the bearer scheme (valid, expired, revoked, wrong), roles, the `api_token` command and the
user's tokens page."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import io
import re
from typing import Any

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pools.api.tokens import token_create
from pools.models import ApiToken, Event
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


# --- the audit, and the lifetime -----------------------------------------------------------------------


def test_creating_and_revoking_a_token_are_events_without_its_secret(viewer_client: Client, viewer: User) -> None:
    """Who created that API token: the page's user, or the OS user of the command; never the secret."""
    page = viewer_client.post(reverse("api-tokens"), {"name": "laptop", "expires": "30d"})
    assert page.status_code == 200
    mine = ApiToken.objects.get(name="laptop")
    assert viewer_client.post(reverse("api-token-revoke", args=[mine.pk])).status_code == 302
    secret, _ = _run("create", viewer.username, "--name", "ci")
    ci = ApiToken.objects.get(name="ci")
    _run("revoke", ci.prefix)

    cli = f"cli:{getpass.getuser()}"
    events = list(Event.objects.order_by("id"))
    assert [(e.kind, e.actor) for e in events] == [
        ("token_created", viewer.username), ("token_revoked", viewer.username), ("token_created", cli),
        ("token_revoked", cli)]
    assert events[0].reason.startswith(f"API token {mine.prefix}… ('laptop') created for '{viewer.username}', expires ")
    assert events[3].reason == f"API token {ci.prefix}… ('ci') of '{viewer.username}' revoked"
    assert not any(secret.strip() in f"{e.reason} {e.actor}" for e in events)


def test_a_new_password_or_a_deactivated_account_revokes_the_users_tokens(viewer: User, operator: User) -> None:
    first, second, others = token_create(user=viewer), token_create(user=viewer), token_create(user=operator)
    viewer.save(update_fields=["last_login"])  # a login
    viewer.first_name = "Vera"
    viewer.save()  # no new password
    assert Api(first.secret).get(SPECS).status_code == 200
    viewer.set_password("a brand new passphrase 42")
    viewer.save()
    assert Api(first.secret).get(SPECS).status_code == Api(second.secret).get(SPECS).status_code == 401
    assert Api(others.secret).get(SPECS).status_code == 200
    revoked = Event.objects.filter(kind="token_revoked")
    assert revoked.count() == 2
    assert all(e.reason.endswith(f"the password of '{viewer.username}' changed") for e in revoked)

    third = token_create(user=operator)
    operator.is_active = False
    operator.save()
    assert not ApiToken.objects.filter(user=operator, revoked_at__isnull=True).exists()
    deactivated = f"the account '{operator.username}' was deactivated"
    assert Event.objects.filter(kind="token_revoked", reason__endswith=deactivated).count() == 2
    assert Api(third.secret).get(SPECS).status_code == 401


def test_a_re_hash_of_the_same_password_at_login_revokes_nothing(viewer: User, settings: Any) -> None:
    """Django re-hashes a password at login when its hasher's cost changed: that is no new password."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                 "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    viewer.password = make_password("the same passphrase 42", hasher="pbkdf2_sha256")
    viewer.save()
    new = token_create(user=viewer)
    before = viewer.password
    assert viewer.check_password("the same passphrase 42")
    assert User.objects.get(pk=viewer.pk).password != before  # re-hashed with the preferred hasher
    assert Api(new.secret).get(SPECS).status_code == 200


def test_a_token_lives_at_most_the_maximum(viewer: User, viewer_client: Client, settings: Any) -> None:
    settings.EIPDASH_API_TOKEN_MAX_DAYS = 30
    with pytest.raises(CommandError, match="at most 30 days"):
        _run("create", viewer.username, "--expires", "90d")
    _run("create", viewer.username)  # no lifetime asked: the maximum
    token = ApiToken.objects.get()
    assert token.expires_at - token.created_at == dt.timedelta(days=30)
    page = viewer_client.get(reverse("api-tokens")).content.decode()
    select = re.search(r'<select name="expires".*?</select>', page, re.S)
    assert select is not None and re.findall(r'value="([^"]*)"', select.group(0)) == ["30d"]
    assert viewer_client.post(reverse("api-tokens"), {"name": "long", "expires": "365d"}).status_code == 400
    # A token made before the maximum, to never expire: it ends 30 days after its creation.
    settings.EIPDASH_API_TOKEN_MAX_DAYS = 0
    old = token_create(user=viewer, name="old")
    assert old.token.expires_at is None
    ApiToken.objects.filter(pk=old.token.pk).update(created_at=timezone.now() - dt.timedelta(days=31))
    assert Api(old.secret).get(SPECS).status_code == 200  # no maximum
    settings.EIPDASH_API_TOKEN_MAX_DAYS = 30
    refused = Api(old.secret).get(SPECS)
    assert refused.status_code == 401 and "expired at" in refused.json()["detail"]


def test_api_tokens_revoke_asks_first(viewer_client: Client, viewer: User) -> None:
    new = token_create(user=viewer, name="laptop")
    token = new.token
    revoke = reverse("api-token-revoke", args=[token.pk])
    page = viewer_client.get(reverse("api-tokens")).content.decode()
    row = page.split(f'id="token-{token.pk}"')[1].split("</tr>")[0]
    assert "Revoke…" in row and 'method="get"' in row and revoke not in row
    dialog = page.split(f'id="revoke-{token.pk}"')[1].split("</dialog>")[0]
    assert page.count(f'action="{revoke}"') == 1 and f'action="{revoke}"' in dialog
    assert f"Revoke {token.prefix}…" in dialog and "401" in dialog
    assert "autofocus" in dialog.split(f'id="revoke-{token.pk}-cancel"')[1].split(">")[0]
    # Without JavaScript, the row's GET shows the confirmation open in the page.
    asked = viewer_client.get(reverse("api-tokens"), {"revoke": token.pk}).content.decode()
    assert f'<dialog open id="revoke-{token.pk}"' in asked
    assert viewer_client.get(revoke).status_code == 405
    assert Api(new.secret).get(SPECS).status_code == 200  # still valid: nothing was revoked


def test_api_tokens_new_secret_has_a_copy_button(viewer_client: Client) -> None:
    html = viewer_client.post(reverse("api-tokens"), {"name": "laptop", "expires": "30d"}).content.decode()
    secret = html.split('id="token-secret">')[1].split("<")[0]
    assert f'data-copy="{secret}"' in html


def test_api_tokens_page_ignores_a_revoke_id_of_thousands_of_digits(viewer_client: Client) -> None:
    """int() of 5,000 digits raised: a 500 any reader could cause."""
    assert viewer_client.get(reverse("api-tokens"), {"revoke": "9" * 5000}).status_code == 200


def test_tokens_past_the_maximum_lifetime_do_not_count_as_live(viewer: User, settings: Any) -> None:
    """"Never" tokens made before a maximum was set are expired by it: they must not block a new token."""
    settings.EIPDASH_API_TOKEN_MAX_DAYS = 0
    from pools.api.tokens import TOKENS_PER_USER_MAX

    for _ in range(TOKENS_PER_USER_MAX):
        token_create(user=viewer)
    ApiToken.objects.update(created_at=timezone.now() - dt.timedelta(days=200))
    settings.EIPDASH_API_TOKEN_MAX_DAYS = 90
    assert token_create(user=viewer, expires_in=dt.timedelta(days=30)).token.pk
