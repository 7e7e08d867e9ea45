"""Groups "viewers" (read-only) and "operators" (also reassign EIPs and edit launch specs)."""

from __future__ import annotations

from django.db import migrations

OPERATOR_PERMISSIONS = [
    ("elasticip", "reassign_elasticip", "Can move an Elastic IP to another node by hand"),
    ("launchspec", "add_launchspec", "Can add launch spec"),
    ("launchspec", "change_launchspec", "Can change launch spec"),
]


def create_groups(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    # Permissions are normally created after migrate (post_migrate); on a fresh database they do not exist
    # yet when this runs, so create them here. post_migrate finds them by (content type, codename) later.
    permissions = []
    for model, codename, name in OPERATOR_PERMISSIONS:
        content_type, _ = ContentType.objects.get_or_create(app_label="pools", model=model)
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        permissions.append(permission)
    Group.objects.get_or_create(name="viewers")
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(*permissions)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["viewers", "operators"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("pools", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
