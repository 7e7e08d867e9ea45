"""The nodes pages' filter (neither gone nor released): a partial index that repeats its condition.

PostgreSQL reads the 5,000 live nodes among 100,000 deleted ones from it (a bitmap scan) instead of the
whole table. SQLite cannot use a partial index when the condition's values are bound parameters, as Django
sends them: there the nodes pages still scan the table (see bench/README.md).
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pools", "0007_event_search_trigram"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="node",
            index=models.Index(
                condition=models.Q(("state__in", ["gone", "released"]), _negated=True),
                fields=["name", "id"],
                name="node_active_name",
            ),
        ),
    ]
