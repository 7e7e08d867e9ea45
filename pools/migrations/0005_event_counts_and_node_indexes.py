"""Per-kind event counts kept by triggers, and the node indexes the pass and the dashboard read by.

The counts: pools_eventcount holds one row per event kind. Triggers on pools_event add and subtract on
every insert and delete, in the same transaction, whatever makes the change (the ORM, bulk inserts, COPY,
retention). PostgreSQL uses statement-level triggers with transition tables, so that a bulk insert of a
million rows updates each kind once; SQLite has only row-level triggers. The table is filled from the
existing rows under a lock that keeps inserts out until the triggers are in place.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

POSTGRES_UP = [
    "LOCK TABLE pools_event IN SHARE ROW EXCLUSIVE MODE",
    "INSERT INTO pools_eventcount (kind, total) SELECT kind, COUNT(*) FROM pools_event GROUP BY kind",
    """
    CREATE FUNCTION pools_eventcount_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- In kind order: two transactions that insert several kinds lock the count rows in one order.
        INSERT INTO pools_eventcount (kind, total)
        SELECT kind, COUNT(*) FROM pools_event_new GROUP BY kind ORDER BY kind
        ON CONFLICT (kind) DO UPDATE SET total = pools_eventcount.total + EXCLUDED.total;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION pools_eventcount_subtract() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE pools_eventcount AS c SET total = c.total - d.n
        FROM (SELECT kind, COUNT(*) AS n FROM pools_event_old GROUP BY kind ORDER BY kind) AS d
        WHERE c.kind = d.kind;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER pools_event_count_insert AFTER INSERT ON pools_event
    REFERENCING NEW TABLE AS pools_event_new FOR EACH STATEMENT EXECUTE FUNCTION pools_eventcount_add()
    """,
    """
    CREATE TRIGGER pools_event_count_delete AFTER DELETE ON pools_event
    REFERENCING OLD TABLE AS pools_event_old FOR EACH STATEMENT EXECUTE FUNCTION pools_eventcount_subtract()
    """,
]
POSTGRES_DOWN = [
    "DROP TRIGGER IF EXISTS pools_event_count_insert ON pools_event",
    "DROP TRIGGER IF EXISTS pools_event_count_delete ON pools_event",
    "DROP FUNCTION IF EXISTS pools_eventcount_add()",
    "DROP FUNCTION IF EXISTS pools_eventcount_subtract()",
]
SQLITE_UP = [
    # A migration on SQLite runs in one transaction that holds the write lock: no insert slips in between.
    "INSERT INTO pools_eventcount (kind, total) SELECT kind, COUNT(*) FROM pools_event GROUP BY kind",
    """
    CREATE TRIGGER pools_event_count_insert AFTER INSERT ON pools_event BEGIN
        INSERT INTO pools_eventcount (kind, total) VALUES (NEW.kind, 1)
        ON CONFLICT (kind) DO UPDATE SET total = total + 1;
    END
    """,
    """
    CREATE TRIGGER pools_event_count_delete AFTER DELETE ON pools_event BEGIN
        UPDATE pools_eventcount SET total = total - 1 WHERE kind = OLD.kind;
    END
    """,
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS pools_event_count_insert",
    "DROP TRIGGER IF EXISTS pools_event_count_delete",
]


def _run(statements: dict[str, list[str]]) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise RuntimeError(f"eipdash keeps its event counts with triggers on PostgreSQL and SQLite, not {vendor}")
        for statement in statements[vendor]:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("pools", "0004_reassign_request"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventCount",
            fields=[
                ("kind", models.CharField(max_length=20, primary_key=True, serialize=False)),
                ("total", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(
            _run({"postgresql": POSTGRES_UP, "sqlite": SQLITE_UP}),
            _run({"postgresql": POSTGRES_DOWN, "sqlite": SQLITE_DOWN}),
        ),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(fields=["launch_spec", "deleted_at"], name="node_spec_deleted"),
        ),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(fields=["eni_id"], name="node_eni"),
        ),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(fields=["eip_ready_at"], name="node_eip_ready"),
        ),
        migrations.AddIndex(
            model_name="node",
            index=models.Index(
                condition=models.Q(("state", "gone"), _negated=True), fields=["name", "id"], name="node_live_name"
            ),
        ),
    ]
