"""Operators may delete launch specs from the dashboard (the service still refuses one that holds EIPs).

Deleting was guarded by the change permission; it now has its own, granted here to the operators group
explicitly so that a site can take it away from operators without taking away editing.
"""

from __future__ import annotations

from django.db import migrations


def grant(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="pools", model="launchspec")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="delete_launchspec", defaults={"name": "Can delete launch spec"}
    )
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(permission)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    operators = Group.objects.filter(name="operators").first()
    permission = Permission.objects.filter(content_type__app_label="pools", codename="delete_launchspec").first()
    if operators is not None and permission is not None:
        operators.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [("pools", "0009_assignment_eip_last_close")]
    operations = [migrations.RunPython(grant, revoke)]
