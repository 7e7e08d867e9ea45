"""Who may call the API: bearer tokens or the dashboard's session; the dashboard's roles. Rate limits: throttle.py."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from eipdash.middleware import is_reader
from pools.models import ApiToken

from .tokens import TokenError, token_authenticate

# Both spellings: `Bearer` (RFC 6750) and `Token` (DRF's and NetBox's).
KEYWORDS = (b"bearer", b"token")


class BearerTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>` (or `Token <token>`). request.auth is the ApiToken."""

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None  # no token: the session may authenticate the request
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization header: give one token after Bearer, no spaces")
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid API token") from None
        try:
            token = token_authenticate(secret)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="eipdash api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The token scheme in the OpenAPI schema (drf-spectacular finds it by the class path)."""

    target_class = "pools.api.auth.BearerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API token: `manage.py api_token create USER`"}


class IsReader(BasePermission):
    """The dashboard's rule: viewers, operators and superusers read; an account in no group gets 403.
    Writes additionally need the model permissions the view lists in `write_permissions`."""

    message = "your account is in no group that may read eipdash (viewers, operators)"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            raise exceptions.NotAuthenticated()
        return is_reader(user)


def require_permissions(request: Request, *perms: str) -> None:
    """403 unless the user holds every permission (operators: launch-spec writes and reassign)."""
    missing = [perm for perm in perms if not request.user.has_perm(perm)]
    if missing:
        raise exceptions.PermissionDenied(f"your account lacks the permission {', '.join(missing)} "
                                          "(the operators group has it)")

