"""The user's API tokens page: list, create (the secret shown once, in the answer to the POST) and revoke.

A dashboard page, so logins and roles work as on the others: the login page for a stranger, 403 for an
account in no group. A user sees and revokes only their own tokens.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from eipdash.middleware import is_reader

from .tokens import NAME_MAX, NewToken, TokenError, parse_duration, token_create, token_list, token_revoke, token_state

EXPIRY_CHOICES = [("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year"), ("", "never")]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, required=False, help_text="What it is for, e.g. terraform or ci.")
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="90d", required=False, label="Expires after")


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
        expiry = form.cleaned_data["expires"]
        try:
            created = token_create(user=request.user,  # type: ignore[arg-type]
                                   name=form.cleaned_data["name"],
                                   expires_in=parse_duration(expiry) if expiry else None)
        except TokenError as exc:
            form.add_error(None, str(exc))
        else:
            form = TokenCreateForm()
    tokens = [(token, token_state(token)) for token in token_list(user=request.user)]  # type: ignore[arg-type]
    context = {"form": form, "tokens": tokens, "created": created}
    status = 400 if form.is_bound and form.errors else 200
    response = render(request, "api/tokens.html", context, status=status)
    if created is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page: no cache keeps it
    return response


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    _reader(request)
    token = token_list(user=request.user).filter(pk=token_id).first()  # type: ignore[arg-type]
    if token is None:
        raise Http404("no such API token of yours")
    if token_revoke(token=token):
        messages.success(request, f"API token {token.prefix}… revoked: it no longer authenticates.")
    return redirect("api-tokens")
