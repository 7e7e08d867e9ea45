from __future__ import annotations

from django.urls import path

from . import views, views_node

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("", views.overview, name="overview"),
    path("launch-specs/", views.launch_spec_list, name="launch-spec-list"),
    path("launch-specs/new/", views.launch_spec_create, name="launch-spec-create"),
    path("launch-specs/import/", views.launch_spec_import, name="launch-spec-import"),
    path("launch-specs/<str:name>/", views.launch_spec_detail, name="launch-spec-detail"),
    path("launch-specs/<str:name>/edit/", views.launch_spec_edit, name="launch-spec-edit"),
    path("launch-specs/<str:name>/disable/", views.launch_spec_disable, name="launch-spec-disable"),
    path("launch-specs/<str:name>/delete/", views.launch_spec_delete, name="launch-spec-delete"),
    path("launch-specs/<str:name>/export.json", views.launch_spec_export, name="launch-spec-export"),
    path("launch-specs/<str:name>/user-data.sh", views.launch_spec_user_data, name="launch-spec-user-data"),
    path("launch-specs/<str:name>/egress-ips.txt", views.launch_spec_egress_ips, name="launch-spec-egress-ips"),
    path("eips/", views.eip_list, name="eip-list"),
    path("eips/<str:allocation_id>/", views.eip_detail, name="eip-detail"),
    path("eips/<str:allocation_id>/reassign/", views.eip_reassign, name="eip-reassign"),
    path("eips/<str:allocation_id>/reassign/confirm/", views.eip_reassign_confirm, name="eip-reassign-confirm"),
    path("eips/<str:allocation_id>/reassign/<int:request_id>/", views.eip_reassign_status,
         name="eip-reassign-status"),
    path("nodes/", views.node_list, name="node-list"),
    path("nodes/<str:cluster>/<str:name>/", views_node.node_detail, name="node-detail"),
    path("history/", views.history, name="history"),
    path("history/export.csv", views.history_export, {"fmt": "csv"}, name="history-export-csv"),
    path("history/export.jsonl", views.history_export, {"fmt": "jsonl"}, name="history-export-jsonl"),
]
