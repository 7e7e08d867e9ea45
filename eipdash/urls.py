from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLResolver, include, path
from django.urls.resolvers import RoutePattern

from pools.api import pages as api_pages

admin.site.site_header = "eipdash administration"
admin.site.site_title = "eipdash"

urlpatterns = [
    path("admin/", admin.site.urls),
    # Log in and out only. No password-reset pages: eipdash sends no mail, and an open reset form would
    # only let strangers probe for accounts. An admin sets passwords in /admin/ or with changepassword.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The REST API (/api/v1/), its OpenAPI schema and docs: JSON answers only, never the login page. Its URLconf
    # is imported on the first request under /api/ or the first reverse(), not by every first request:
    # Django REST framework and drf-spectacular are half a second of imports that a probe (/healthz) skips.
    URLResolver(RoutePattern("api/"), "pools.api.urls"),
    # The user's API tokens (a dashboard page: login and roles as on the others).
    path("account/api-tokens/", api_pages.api_tokens, name="api-tokens"),
    path("account/api-tokens/<int:token_id>/revoke/", api_pages.api_token_revoke, name="api-token-revoke"),
    path("", include("pools.urls")),
]
