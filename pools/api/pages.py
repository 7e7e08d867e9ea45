"""The user's API tokens page: list, create (the secret shown once, in the answer to the POST) and revoke
(after a confirmation: a modal, or without JavaScript the page again with `?revoke=ID`).

A dashboard page, so logins and roles work as on the others: the login page for a stranger, 403 for an
account in no group. A user sees and revokes only their own tokens.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from eipdash.middleware import is_reader

from .tokens import (
    NAME_MAX,
    NewToken,
    TokenError,
    expiry,
    max_lifetime,
    parse_duration,
    token_create,
    token_list,
    token_revoke,
    token_state,
)

EXPIRY_CHOICES = [("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year"), ("", "never")]


def expiry_choices() -> list[tuple[str, str]]:
    """The lifetimes this site allows (EIPDASH_API_TOKEN_MAX_DAYS): none longer than the maximum."""
    longest = max_lifetime()
    if longest is None:
        return EXPIRY_CHOICES
    return [(value, label) for value, label in EXPIRY_CHOICES if value and parse_duration(value) <= longest]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, required=False, help_text="What it is for, e.g. terraform or ci.")
    expires = forms.ChoiceField(choices=expiry_choices, initial="90d", required=False, label="Expires after")


def _reader(request: HttpRequest) -> None:
    if not is_reader(request.user):
        raise PermissionDenied("your account is in no group that may read eipdash (viewers, operators)")


@require_http_methods(["GET", "POST"])
@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    _reader(request)
    form = TokenCreateForm(request.POST or None)
    created: NewToken | None = None
    if request.method == "POST" and form.is_valid():
        asked = form.cleaned_data["expires"]
        try:
            created = token_create(user=request.user,  # type: ignore[arg-type]
                                   name=form.cleaned_data["name"],
                                   expires_in=parse_duration(asked) if asked else None,
                                   actor=request.user.get_username())
        except TokenError as exc:
            form.add_error(None, str(exc))
        else:
            form = TokenCreateForm()
    tokens = [(token, token_state(token), expiry(token))
              for token in token_list(user=request.user)]  # type: ignore[arg-type]
    context = {"form": form, "tokens": tokens, "created": created, "confirm_revoke": _asked_to_revoke(request)}
    status = 400 if form.is_bound and form.errors else 200
    response = render(request, "api/tokens.html", context, status=status)
    if created is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page: no cache keeps it
    return response


def _asked_to_revoke(request: HttpRequest) -> int | None:
    """`?revoke=ID`: the Revoke button's GET without JavaScript; the page shows that token's confirmation open."""
    asked = request.GET.get("revoke", "")
    # ASCII digits, at most 18: "²".isdigit() too, and int() of 5,000 digits raises (a 500); no id is that long.
    return int(asked) if re.fullmatch(r"[0-9]{1,18}", asked) else None


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    _reader(request)
    token = token_list(user=request.user).filter(pk=token_id).first()  # type: ignore[arg-type]
    if token is None:
        raise Http404("no such API token of yours")
    if token_revoke(token=token, actor=request.user.get_username()):
        messages.success(request, f"API token {token.prefix}… revoked: it no longer authenticates.")
    return redirect("api-tokens")
