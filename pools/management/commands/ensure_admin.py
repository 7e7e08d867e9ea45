"""`manage.py ensure_admin`: make sure the superuser `admin` exists, and say how to log in.

The password comes from EIPDASH_ADMIN_PASSWORD. Without it, one is generated once and kept in
``var/admin-password`` (mode 0600), so the login printed by `make run` stays the same from run to run.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from pools import services
from pools.management.cli import cli_actor

PASSWORD_ENV = "EIPDASH_ADMIN_PASSWORD"


def stored_password(path: Path) -> str:
    """The generated password kept at ``path``, created on first use."""
    if path.exists():
        password = path.read_text().strip()
        if password:
            return password
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    # Created with 0600 from the start: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


class Command(BaseCommand):
    help = "Create or update the superuser 'admin' (password from EIPDASH_ADMIN_PASSWORD, else generated)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--password-file", default=str(Path(settings.VAR_DIR) / "admin-password"),
            help="where a generated password is kept (default var/admin-password)",
        )
        parser.add_argument("--quiet-login", action="store_true", help="do not print the password")

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get(PASSWORD_ENV) or stored_password(Path(options["password_file"]))
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(
                username=options["username"], defaults={"is_staff": True, "is_superuser": True}
            )
            before = "(new)" if created else services.user_role(user)
            if created or not user.check_password(password) or not (user.is_staff and user.is_superuser):
                user.is_staff = True
                user.is_superuser = True
                user.is_active = True
                user.set_password(password)
                user.save()
            services.user_role_audit(user=user, before=before, actor=cli_actor())
        source = PASSWORD_ENV if os.environ.get(PASSWORD_ENV) else options["password_file"]
        if options["quiet_login"]:
            self.stdout.write(f"admin user '{user.username}' ready (password from {source})")
        else:
            self.stdout.write(f"login: {user.username} / {password}   (password from {source})")
