"""PostgreSQL only: a trigram index for the history's text search. Nothing on SQLite.

The history's `q=` search matches a substring of the node, public IP, allocation id, instance id, actor or
reason. On PostgreSQL it is one LIKE on one expression (pools/selectors.py EVENT_SEARCH_SQL); this GIN
index of pg_trgm over that same expression turns a search that matches a few rows of a million-row history
from a scan of the whole table into an index lookup. Building it on a million events takes about a minute,
without blocking the workers' inserts (CREATE INDEX CONCURRENTLY).

pg_trgm ships with PostgreSQL and is a trusted extension (PostgreSQL 13+: the database owner may create it).
Where it cannot be created, the migration says so and goes on without the index: the search still works,
only slower.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import migrations, transaction

log = logging.getLogger(__name__)

# Must stay the expression of pools.selectors.EVENT_SEARCH_SQL, or PostgreSQL will not use the index.
INDEX = "pools_event_search_trgm"
EXPRESSION = (
    "UPPER(node || chr(31) || public_ip || chr(31) || allocation_id || chr(31) || instance_id || chr(31) || actor "
    "|| chr(31) || reason)"
)


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as exc:  # noqa: BLE001 - a missing privilege must not stop the upgrade
        log.warning("pg_trgm is not available (%s): the history search works without its index, more slowly", exc)
        return
    # CONCURRENTLY: the workers keep recording events while the index builds (about a minute a million).
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON pools_event USING gin (({EXPRESSION}) gin_trgm_ops)")
    # Finer statistics of the expression, so that the planner tells a common term (read the history newest
    # first and stop at a page) from a rare one (look it up in this index): with the default, a term found
    # in 3% of the rows was taken for a rare one and its 30,000 matches were fetched and sorted.
    schema_editor.execute(f"ALTER INDEX {INDEX} ALTER COLUMN 1 SET STATISTICS 1000")
    schema_editor.execute("ANALYZE pools_event")


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False
    dependencies = [
        ("pools", "0006_node_drain_reason"),
    ]

    operations = [migrations.RunPython(create, drop)]
