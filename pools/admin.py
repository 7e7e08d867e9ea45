"""The admin: users, groups and clusters. Everything else is read-only here.

Launch specs are written only through `launch_spec_apply` (the dashboard, the import page and
`manage.py launchspec`), which validates names, labels and tags and waits for the spec's running pass;
they are deleted only through `launch_spec_delete`, which refuses while the spec holds EIPs. An admin
form would bypass both. The snapshots belong to the workers, and the history is append-only.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from .models import Assignment, Cluster, ElasticIP, Event, LaunchSpec, Node
from .services import cluster_problems


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ClusterForm(forms.ModelForm):
    class Meta:
        model = Cluster
        fields = ("name", "region", "kube_context", "kubeconfig")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        problems = cluster_problems(
            name=cleaned.get("name", ""),
            region=cleaned.get("region", ""),
            kube_context=cleaned.get("kube_context", ""),
            kubeconfig=cleaned.get("kubeconfig", ""),
            exclude_pk=self.instance.pk,
        )
        if problems:
            raise forms.ValidationError(problems)
        return cleaned


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    """Only superusers add, change or delete clusters: a cluster row points the workers at a kube context."""

    form = ClusterForm
    list_display = ("name", "region", "kube_context", "kubeconfig", "created_at")
    search_fields = ("name",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return bool(request.user.is_superuser)


@admin.register(LaunchSpec)
class LaunchSpecAdmin(ReadOnlyAdmin):
    list_display = ("name", "cluster", "tag_key", "tag_value", "enabled", "last_reconciled_at")
    list_filter = ("enabled", "cluster")
    list_select_related = ("cluster",)
    search_fields = ("name", "tag_key", "tag_value")


@admin.register(ElasticIP)
class ElasticIPAdmin(ReadOnlyAdmin):
    list_display = ("public_ip", "allocation_id", "region", "instance_id", "gone", "last_seen_at")
    list_filter = ("region", "gone")
    search_fields = ("public_ip", "allocation_id", "instance_id")


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    list_display = ("name", "instance_id", "launch_spec", "state", "draining", "workload_pods", "first_seen_at")
    list_filter = ("state", "draining", "launch_spec")
    list_select_related = ("launch_spec",)
    search_fields = ("name", "instance_id")


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ("eip", "node", "launch_spec", "opened_at", "confirmed_at", "closed_at", "actor")
    list_filter = ("launch_spec",)
    list_select_related = ("eip", "node", "launch_spec")
    search_fields = ("eip__public_ip", "node__name")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("timestamp", "kind", "launch_spec", "node", "public_ip", "actor", "reason")
    list_filter = ("kind",)
    search_fields = ("node", "public_ip", "allocation_id", "reason")
    # A COUNT(*) on a million rows per page view is the slow part of the admin changelist.
    show_full_result_count = False
