"""Security review (issue 7), the web's own rules: who may read, login throttling, session expiry under
htmx, removed password-reset pages, and production settings. Each test failed on the old code."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from tests.fixtures.web import PASSWORD, WebWorld

ROOT = Path(__file__).resolve().parents[2]


def _pages(world: WebWorld) -> list[str]:
    return [
        reverse("overview"),
        reverse("launch-spec-list"),
        reverse("launch-spec-detail", args=[world.spec.name]),
        reverse("launch-spec-export", args=[world.spec.name]),
        reverse("launch-spec-user-data", args=[world.spec.name]),
        reverse("eip-list"),
        reverse("eip-detail", args=[world.eips[0].allocation_id]),
        reverse("node-list"),
        reverse("history"),
        reverse("history-export-csv"),
        reverse("metrics"),
    ]


# --- 9. users in no group -------------------------------------------------------------------------


def test_a_user_in_no_group_reads_nothing(web_world: WebWorld) -> None:
    client = Client()
    client.force_login(User.objects.create_user("nobody", password=PASSWORD))
    for url in _pages(web_world):
        assert client.get(url).status_code == 403, url
    assert client.get(reverse("healthz")).status_code == 200


def test_viewers_operators_and_superusers_read(viewer_client: Client, operator_client: Client, web_world: WebWorld):
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("sam-super", password=PASSWORD))
    for client in (viewer_client, operator_client, superuser):
        for url in _pages(web_world):
            assert client.get(url).status_code == 200, url


# --- 11. session expiry under htmx ----------------------------------------------------------------


def test_an_expired_session_under_htmx_gets_hx_redirect_to_login(client: Client, web_world: WebWorld) -> None:
    response = client.get(
        reverse("eip-list") + "?state=free",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/eips/?state=free&q=203"},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/accounts/login/?next=%2Feips%2F%3Fstate%3Dfree%26q%3D203"
    assert b"Log in" not in response.content
    # Without htmx, the ordinary redirect.
    plain = client.get(reverse("eip-list"))
    assert plain.status_code == 302 and plain["Location"].startswith("/accounts/login/")


# --- 3. login throttling --------------------------------------------------------------------------


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_repeated_wrong_passwords_lock_the_login(login_url: str, db: None) -> None:
    User.objects.create_superuser("sam-super", password=PASSWORD)
    client = Client()
    for _ in range(5):
        response = client.post(login_url, {"username": "sam-super", "password": "wrong-password"})
        assert response.status_code in (200, 429)
    locked = client.post(login_url, {"username": "sam-super", "password": PASSWORD})
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session
    # Another address is not locked out by this one's failures.
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert other.post(login_url, {"username": "sam-super", "password": PASSWORD}).status_code == 302


def test_a_success_before_the_limit_resets_the_count(db: None) -> None:
    User.objects.create_user("olga", password=PASSWORD)
    client = Client()
    for _ in range(3):
        client.post("/accounts/login/", {"username": "olga", "password": "nope"})
    assert client.post("/accounts/login/", {"username": "olga", "password": PASSWORD}).status_code == 302


@pytest.mark.parametrize("password", ["12345678901234", "password1234", "olga-operator1"])
def test_the_standard_password_validators_refuse_weak_passwords(password: str, db: None) -> None:
    with pytest.raises(ValidationError):
        validate_password(password, User(username="olga-operator1"))


# --- 8. settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/accounts/password_reset/", "/accounts/reset/MQ/set-password/"])
def test_no_password_reset_pages(client: Client, url: str, db: None) -> None:
    assert client.get(url).status_code == 404


def test_pages_send_a_content_security_policy(viewer_client: Client, web_world: WebWorld) -> None:
    policy = viewer_client.get(reverse("overview"))["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["default-src"] == "'self'"
    assert "unsafe-inline" not in directives["style-src"] and directives["frame-ancestors"] == "'none'"


def _settings_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "EIPDASH_"))}
    env.update(DJANGO_SETTINGS_MODULE="eipdash.settings", DATABASE_URL="sqlite:////tmp/eipdash-check.sqlite3")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")  # `check` never connects; production requires one
    env.update(extra)
    return {key: value for key, value in env.items() if value is not None}


def test_a_short_secret_key_is_refused_in_production() -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, check=False,
        env=_settings_env(DJANGO_SECRET_KEY="short-but-not-empty", DJANGO_ALLOWED_HOSTS="eipdash.example.com"),
        timeout=120,
    )
    assert run.returncode != 0 and "at least 50 characters" in run.stderr


def test_production_refuses_to_start_without_redis() -> None:
    """Without Redis there is no lease: two passes of one spec could run side by side. Refused, not degraded."""
    run = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, check=False,
        env={key: value for key, value in _settings_env(DJANGO_SECRET_KEY=secrets.token_hex(32),
                                                        DJANGO_ALLOWED_HOSTS="eipdash.example.com").items()
             if key != "REDIS_URL"},
        timeout=120,
    )
    assert run.returncode != 0 and "ImproperlyConfigured: REDIS_URL is required" in run.stderr


def test_production_settings_leave_the_sandbox_out_and_keep_the_commands() -> None:
    """The sandbox app is for development and tests; the engine's commands live with the workers."""
    run = subprocess.run(
        [sys.executable, "manage.py", "help"], cwd=ROOT, capture_output=True, text=True, check=True,
        env=_settings_env(DJANGO_SECRET_KEY=secrets.token_hex(32), DJANGO_ALLOWED_HOSTS="eipdash.example.com"),
        timeout=120,
    )
    commands = run.stdout.split("[workers]", 1)[1].split("[", 1)[0].split()
    assert {"reconcile", "watch_nodes", "check_invariants", "worker_alive"} <= set(commands)
    assert "[sandbox]" not in run.stdout and "[pools]" in run.stdout


def _readme_production_variables() -> dict[str, str]:
    """The `export` lines of the README's production settings block, as the shell would set them."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security") :]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block is not None
    variables: dict[str, str] = {}
    for line in block.group(1).splitlines():
        line = line.replace("$(openssl rand -hex 32)", secrets.token_hex(32))
        words = shlex.split(line)
        assert words[0] == "export"
        variables.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
    return variables


def test_check_deploy_is_clean_with_the_readme_production_variables() -> None:
    variables = _readme_production_variables()
    assert variables["DJANGO_SECURE_SSL_REDIRECT"] == "true"
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, capture_output=True, text=True, check=False, env=_settings_env(**variables), timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues" in run.stdout
