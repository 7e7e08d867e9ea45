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
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest

from . import services
from .kubeconfigs import context_problem
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
        # The file is read here, as the workers will read it: the context the row selects must be in it.
        if problem := context_problem(cleaned.get("kubeconfig", ""), cleaned.get("kube_context", "")):
            problems.append(problem)
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

    # Every change is an event of the history with its actor (pools/audit.py), in the admin's transaction.
    def save_model(self, request: HttpRequest, obj: Cluster, form: Any, change: bool) -> None:
        before = services.cluster_state(Cluster.objects.filter(pk=obj.pk).first()) if change else None
        super().save_model(request, obj, form, change)
        services.cluster_audit(name=obj.name, before=before, after=obj, actor=request.user.get_username())

    def delete_model(self, request: HttpRequest, obj: Cluster) -> None:
        before = services.cluster_state(obj)
        super().delete_model(request, obj)
        services.cluster_audit(name=obj.name, before=before, after=None, actor=request.user.get_username())

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for cluster in queryset:
            self.delete_model(request, cluster)


class AuditedUserAdmin(UserAdmin):
    """Django's user admin; a change of a user's role (groups, superuser, active, write permissions) is an event
    of the history, and so is a deletion, which revokes the user's API tokens first (each an event too)."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Read before the save: the groups are saved after it, in save_related.
        obj._eipdash_role_before = services.user_role(obj if change else None)
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        user = form.instance
        services.user_role_audit(user=user, before=getattr(user, "_eipdash_role_before", "(new)"),
                                 actor=request.user.get_username())

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        from .api.tokens import token_revoke_all

        actor, before = request.user.get_username(), services.user_role(obj)
        token_revoke_all(user=obj, why=f"the account {obj.get_username()!r} was deleted", actor=actor)
        super().delete_model(request, obj)
        services.user_role_audit(user=obj, before=before, actor=actor, after="deleted")

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for user in queryset:
            self.delete_model(request, user)


def _group_state(group: Group | None) -> tuple[str, frozenset[str]] | None:
    if group is None:
        return None
    perms = group.permissions.values_list("content_type__app_label", "codename")
    return group.name, frozenset(f"{app}.{codename}" for app, codename in perms)


class AuditedGroupAdmin(GroupAdmin):
    """Django's group admin; renaming a group, changing its permissions or deleting it changes every member's
    role at once: an event of the history."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj._eipdash_before = _group_state(Group.objects.filter(pk=obj.pk).first()) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        group = form.instance
        services.group_audit(name=group.name, before=getattr(group, "_eipdash_before", None),
                             after=_group_state(group), actor=request.user.get_username())

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        before = _group_state(obj)
        super().delete_model(request, obj)
        services.group_audit(name=obj.name, before=before, after=None, actor=request.user.get_username())

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for group in queryset:
            self.delete_model(request, group)


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, AuditedGroupAdmin)


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
