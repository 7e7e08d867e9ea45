"""/api/v1/…, the schema and the docs; mounted at /api/ by eipdash/urls.py."""

from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView

from . import capacity, views

v1 = [
    path("launch-specs/", views.LaunchSpecListView.as_view(), name="api-launch-spec-list"),
    path("launch-specs:sync", views.LaunchSpecSyncView.as_view(), name="api-launch-spec-sync"),
    path("launch-specs/<str:name>", views.LaunchSpecDetailView.as_view(), name="api-launch-spec-detail"),
    path("launch-specs/<str:name>/plan", views.LaunchSpecPlanView.as_view(), name="api-launch-spec-plan"),
    path("launch-specs/<str:name>/capacity", capacity.LaunchSpecCapacityView.as_view(),
         name="api-launch-spec-capacity"),
    path("launch-specs/<str:name>/egress-ips", capacity.LaunchSpecEgressIpsView.as_view(),
         name="api-launch-spec-egress-ips"),
    path("eips/", views.EipListView.as_view(), name="api-eip-list"),
    path("eips/<str:allocation_id>", views.EipDetailView.as_view(), name="api-eip-detail"),
    path("eips/<str:allocation_id>/reassign", views.ReassignView.as_view(), name="api-reassign"),
    path("eips/<str:allocation_id>/reassign/<int:request_id>", views.ReassignStatusView.as_view(),
         name="api-reassign-status"),
    path("nodes/", views.NodeListView.as_view(), name="api-node-list"),
    path("events/", views.EventListView.as_view(), name="api-event-list"),
]

urlpatterns = [
    path("v1/", include(v1)),
    # JSON by default (and for errors), as its OpenAPI type or as application/json, the Accept of JSON clients
    # (only the OpenAPI type answered them 406); ?format=yaml for YAML.
    path("schema/", SpectacularAPIView.as_view(
        renderer_classes=[OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer]), name="api-schema"),
    # The split view: the page loads its script from a URL of its own (no inline script, as the CSP wants).
    path("docs/", views.DocsView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
         name="api-docs"),
    re_path(r"^.*$", views.not_found),
]
