"""Per-user API tokens: only a SHA-256 of the secret is stored; the secret is shown once, when created.

A secret is `eipd_` + 43 URL-safe characters (256 random bits): the prefix makes a leaked token easy to
recognise (secret scanners, logs). It is found by its hash, a unique indexed column: no secret is compared
character by character, and the database never holds one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from pools import services
from pools.models import SYSTEM_ACTOR, ApiToken, Event

SECRET_PREFIX = "eipd_"
# The clear part kept for listings: the marker and 8 characters of the secret.
PREFIX_LENGTH = len(SECRET_PREFIX) + 8
NAME_MAX = 100
# Live (neither revoked nor expired) tokens per user: enough for every pipeline of a team member; a script
# minting tokens in a loop is refused instead of filling the table.
TOKENS_PER_USER_MAX = 20
# last_used_at is written at most this often per token: not one UPDATE per API call.
LAST_USED_GRAIN = dt.timedelta(minutes=1)
_DURATION_RE = re.compile(r"(\d{1,5})([hdw])")
_UNITS = {"h": dt.timedelta(hours=1), "d": dt.timedelta(days=1), "w": dt.timedelta(weeks=1)}


class TokenError(ValueError):
    """A refused token operation, or a secret that does not authenticate (the message says why)."""


def parse_duration(text: str) -> dt.timedelta:
    """'12h', '90d', '2w' → a timedelta. Anything else is refused."""
    found = _DURATION_RE.fullmatch(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise TokenError(f"expiry {text!r}: give a positive number of hours, days or weeks, e.g. 12h, 90d, 2w")
    return int(found.group(1)) * _UNITS[found.group(2)]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # shown once; never stored


def max_lifetime() -> dt.timedelta | None:
    """EIPDASH_API_TOKEN_MAX_DAYS as a lifetime; None when there is no maximum (0)."""
    days = int(settings.EIPDASH_API_TOKEN_MAX_DAYS)
    return dt.timedelta(days=days) if days else None


def expiry(token: ApiToken) -> dt.datetime | None:
    """When the token stops authenticating: its own expiry, or the maximum lifetime from its creation if that
    comes first (a token made before the maximum was set, or made to never expire)."""
    longest = max_lifetime()
    capped = token.created_at + longest if longest is not None else None
    if token.expires_at is None or capped is None:
        return token.expires_at or capped
    return min(token.expires_at, capped)


def lifetime(expires_in: dt.timedelta | None) -> dt.timedelta | None:
    """The lifetime a new token gets: the one asked for, within the maximum; none asked: the maximum."""
    longest = max_lifetime()
    if longest is None:
        return expires_in
    if expires_in is None:
        return longest
    if expires_in > longest:
        raise TokenError(f"a token lives at most {longest.days} days here (EIPDASH_API_TOKEN_MAX_DAYS); "
                         "ask for less, and make a new one before it expires")
    return expires_in


def token_create(*, user: User, name: str = "", expires_in: dt.timedelta | None = None,
                 actor: str = SYSTEM_ACTOR) -> NewToken:
    """A new token (its creation an event of the history, with `actor`; never its secret)."""
    name = name.strip()
    if len(name) > NAME_MAX:
        raise TokenError(f"a token name has at most {NAME_MAX} characters")
    if not user.is_active:
        raise TokenError(f"user {user.get_username()!r} is inactive")
    expires_in = lifetime(expires_in)
    now = timezone.now()
    live = live_tokens(user, now).count()
    if live >= TOKENS_PER_USER_MAX:
        raise TokenError(f"user {user.get_username()!r} has {live} live API tokens, the most allowed "
                         f"({TOKENS_PER_USER_MAX}): revoke one first")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=secret[:PREFIX_LENGTH],
            key_hash=hash_secret(secret),
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
        until = f"expires {token.expires_at:%Y-%m-%dT%H:%M:%SZ}" if token.expires_at else "never expires"
        _record(Event.Kind.TOKEN_CREATED, f"{_named(token)} created for {user.get_username()!r}, {until}",
                actor)
    return NewToken(token=token, secret=secret)


def _named(token: ApiToken) -> str:
    return f"API token {token.prefix}…" + (f" ({token.name!r})" if token.name else "")


def _record(kind: str, reason: str, actor: str) -> None:
    services.event_record(kind=kind, context=services.EventContext(), reason=reason, actor=actor)


def token_list(*, user: User | None = None) -> QuerySet[ApiToken]:
    tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
    return tokens.filter(user=user) if user is not None else tokens


def token_revoke(*, token: ApiToken, actor: str = SYSTEM_ACTOR, why: str = "") -> bool:
    """Revoke now, an event of the history with `actor`. False when it was revoked already."""
    with transaction.atomic():
        if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()) != 1:
            return False
        owner = token.user.get_username()
        _record(Event.Kind.TOKEN_REVOKED, f"{_named(token)} of {owner!r} revoked" + (f": {why}" if why else ""),
                actor)
    return True


def token_revoke_all(*, user: User, why: str, actor: str = SYSTEM_ACTOR) -> int:
    """Revoke every live token of `user` (their password changed, or the account was deactivated)."""
    live = live_tokens(user, timezone.now()).select_related("user")
    return sum(token_revoke(token=token, actor=actor, why=why) for token in live)


def live_tokens(user: User, now: dt.datetime) -> QuerySet[ApiToken]:
    """The user's tokens that still authenticate: not revoked, not past their expiry nor the maximum lifetime."""
    tokens = ApiToken.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), user=user,
                                     revoked_at__isnull=True)
    longest = max_lifetime()
    return tokens.filter(created_at__gt=now - longest) if longest is not None else tokens


def token_find(ref: str, *, user: User | None = None) -> ApiToken:
    """A token by its listed prefix (eipd_XXXXXXXX) or its id; one of `user`'s when given."""
    tokens = token_list(user=user)
    ref = ref.strip()
    if ref.isdigit():
        found = list(tokens.filter(pk=int(ref)))
    elif ref.startswith(SECRET_PREFIX) and len(ref) >= PREFIX_LENGTH:
        found = list(tokens.filter(prefix=ref[:PREFIX_LENGTH]))
    else:
        raise TokenError(f"{ref!r}: give a token's id or its prefix ({SECRET_PREFIX}…, as `api_token list` shows)")
    if not found:
        raise TokenError(f"no API token {ref!r}")
    if len(found) > 1:
        ids = ", ".join(str(token.pk) for token in found)
        raise TokenError(f"{len(found)} tokens share the prefix {ref!r}: revoke by id ({ids})")
    return found[0]


def token_authenticate(secret: str) -> ApiToken:
    """The live token of this secret, its user loaded; TokenError with the reason otherwise."""
    if not secret.startswith(SECRET_PREFIX):
        raise TokenError("invalid API token")
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_secret(secret)).first()
    if token is None:
        raise TokenError("invalid API token")
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenError(f"API token {token.prefix}… was revoked at {token.revoked_at:%Y-%m-%dT%H:%M:%SZ}")
    if (ends := expiry(token)) is not None and ends <= now:
        raise TokenError(f"API token {token.prefix}… expired at {ends:%Y-%m-%dT%H:%M:%SZ}")
    if not token.user.is_active:
        raise TokenError("the API token's user is inactive")
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_GRAIN:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_GRAIN)
        ).update(last_used_at=now)
    return token


def token_state(token: ApiToken, now: dt.datetime | None = None) -> str:
    """active / expired / revoked, for listings."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return "revoked"
    if (ends := expiry(token)) is not None and ends <= now:
        return "expired"
    return "active"
