"""An index for the planner's sticky rule: the last release (and refusal) of each pool EIP.

The plan preview on the spec page and every pass ask, per pool EIP, for the latest closed_at among the
spec's closed assignments, confirmed (a release) or refused. With only the eip_id index, each EIP's
history rows were fetched from the table to check launch_spec, confirmed_at and close_kind: 60 ms for a
spec of 250 EIPs with 5,000 closed assignments on SQLite. This index holds every column the two queries
read, so both are answered from it (about 2 ms), on SQLite and PostgreSQL (an index-only scan there once
autovacuum has set the visibility map). The assignment table holds one row per node life, small next to
the history; the build takes a moment.
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pools", "0008_node_active_name"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="assignment",
            index=models.Index(
                fields=["eip", "launch_spec", "closed_at", "confirmed_at", "close_kind"],
                name="assignment_eip_last_close",
            ),
        ),
    ]
