from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from pools.api.tokens import (
    TokenError,
    expiry,
    parse_duration,
    token_create,
    token_find,
    token_list,
    token_revoke,
    token_state,
)
from pools.management.cli import cli_actor


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


class Command(BaseCommand):
    help = "Create, list and revoke the REST API's per-user tokens (the secret is printed once, at creation)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a token for USERNAME and print its secret once")
        create.add_argument("username")
        create.add_argument("--name", default="", help="what the token is for, e.g. terraform")
        create.add_argument("--expires", default=None,
                            help="lifetime: 12h, 90d, 2w (default and longest: EIPDASH_API_TOKEN_MAX_DAYS, 90 days; "
                                 "with 0 there, no maximum and the default is never)")
        listing = sub.add_parser("list", help="list tokens (of USERNAME only, when given)")
        listing.add_argument("username", nargs="?")
        revoke = sub.add_parser("revoke", help="revoke a token by its prefix (eipd_…) or id")
        revoke.add_argument("token")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, options["action"])(options)
        except TokenError as exc:
            raise CommandError(str(exc), returncode=2) from None

    def _user(self, username: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise TokenError(f"no user {username!r}")
        return user

    def create(self, options: dict[str, Any]) -> None:
        expires = parse_duration(options["expires"]) if options["expires"] else None
        new = token_create(user=self._user(options["username"]), name=options["name"], expires_in=expires,
                           actor=cli_actor())
        self.stderr.write(f"created API token {new.token.prefix}… (id {new.token.pk}) for {options['username']}, "
                          f"expires {_when(expiry(new.token))}; the secret is shown only now:")
        self.stdout.write(new.secret)

    def list(self, options: dict[str, Any]) -> None:
        user = self._user(options["username"]) if options["username"] else None
        # Tab-separated with a header, like `launchspec list`.
        self.stdout.write("ID\tPREFIX\tNAME\tUSER\tCREATED\tEXPIRES\tLAST_USED\tREVOKED\tSTATE")
        for token in token_list(user=user):
            self.stdout.write(
                f"{token.pk}\t{token.prefix}\t{token.name or '-'}\t{token.user.get_username()}\t"
                f"{_when(token.created_at)}\t{_when(expiry(token))}\t{_when(token.last_used_at)}\t"
                f"{_when(token.revoked_at)}\t{token_state(token)}"
            )

    def revoke(self, options: dict[str, Any]) -> None:
        token = token_find(options["token"])
        if not token_revoke(token=token, actor=cli_actor()):
            raise TokenError(f"API token {token.prefix}… was revoked already")
        self.stdout.write(f"revoked API token {token.prefix}… (id {token.pk}) of {token.user.get_username()}")
