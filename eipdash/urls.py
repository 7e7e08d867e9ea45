from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

admin.site.site_header = "eipdash administration"
admin.site.site_title = "eipdash"

urlpatterns = [
    path("admin/", admin.site.urls),
    # Log in and out only. No password-reset pages: eipdash sends no mail, and an open reset form would
    # only let strangers probe for accounts. An admin sets passwords in /admin/ or with changepassword.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("pools.urls")),
]
