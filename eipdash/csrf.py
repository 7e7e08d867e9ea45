"""CSRF refusals (settings.CSRF_FAILURE_VIEW): JSON under /api/, Django's page everywhere else."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Under /api/, DRF's own words for the refusal (its views check CSRF themselves and answer so): an API client
    reads one JSON shape whichever check refused it, never an HTML page. Only Django here: the dashboard's
    refusals must not import the API's packages."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": f"CSRF Failed: {reason}"}, status=403)
    return csrf.csrf_failure(request, reason)
