from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "eipdash administration"
admin.site.site_title = "eipdash"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("pools.urls")),
]
