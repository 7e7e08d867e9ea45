"""Who may read the dashboard, and what an expired session looks like to htmx.

- Reading any dashboard page needs more than a login: membership of `viewers` or `operators`, or
  superuser. An account in no group (a new user, one removed from its groups) gets 403, not the data.
- When a session expires, `login_required` answers htmx's poll with a redirect to the login page; htmx
  would follow it and swap the login form into a live table. It gets `HX-Redirect` instead, so the
  browser goes to the login page, and back to the page after login.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect

READER_GROUPS = ("viewers", "operators")
# Dashboard views that answer without a reader's session: the health probe, and /metrics when a bearer
# token guards it (the token is the credential then).
OPEN_VIEWS = {"healthz"}


def is_reader(user: Any) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_eipdash_is_reader", None)
    if cached is None:
        cached = user.groups.filter(name__in=READER_GROUPS).exists()
        user._eipdash_is_reader = cached
    return bool(cached)


class ReadAccessMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if getattr(request, "htmx", False) and response.status_code in (301, 302, 303, 307, 308):
            return self._login_redirect(request, response)
        return response

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponseBase | None:
        # Only the dashboard's own views (pools.views and any pools.views_* beside it): the admin, the login
        # pages and static files have their own rules.
        if not getattr(view, "__module__", "").startswith("pools.views") or view.__name__ in OPEN_VIEWS:
            return None
        if view.__name__ == "metrics" and settings.EIPDASH_METRICS_TOKEN:
            return None
        user = getattr(request, "user", None)
        # Anonymous requests go on to login_required, which sends them to the login page.
        if user is not None and user.is_authenticated and not is_reader(user):
            raise PermissionDenied("your account is in no group that may read eipdash (viewers, operators)")
        return None

    @staticmethod
    def _login_redirect(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        login_path = urlsplit(resolve_url(settings.LOGIN_URL)).path
        if urlsplit(response.get("Location", "")).path != login_path:
            return response
        # Back to the page the user was on, not to the partial that the poll asked for. Only a path:
        # the login view would refuse another host anyway.
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        next_url = current.path + (f"?{current.query}" if current.query else "") if current.path else "/"
        return HttpResponseClientRedirect(f"{login_path}?{urlencode({'next': next_url})}")
