"""Retention: the TTL that EVENTPIPE_RETENTION_DAYS sets on each table of events or dead letters."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from eventpipe.store.disk import room_for_schema
from eventpipe.store.system import catalog

# Kept this long past EVENTPIPE_RETENTION_DAYS. The worker takes events up to the retention's age, and a
# TTL at that same age dropped one taken just inside it at the merge seconds later: acknowledged, counted
# stored, and gone before a caught-up /feed sync asked again. Every event taken now lives a day at least.
# The dead letters' tables keep the same day, so that one retention setting says one thing.
RETENTION_GRACE_DAYS = 1
RETAINED = {
    "events": "timestamp",
    "events_by_user": "timestamp",
    "undated_events": "timestamp",
    "arrivals": "timestamp",
    "dead_letters": "received_at",
    "dead_letter_outcomes": "attempted_at",
}


def apply_retention(client: Client, days: int) -> None:
    # Retention is configuration, not schema history, so it is set on every
    # run to whatever the settings say now; unchanged, it is left alone, since
    # MODIFY TTL makes ClickHouse rewrite the table.
    days = int(days)
    changes = [
        change for table, column in RETAINED.items() if (change := _retention_change(client, table, column, days))
    ]
    if changes:
        room_for_schema(client)  # once, before the first: a refusal then leaves every table as it was
    for change in changes:
        client.command(change)


def retain(client: Client, table: str, column: str, days: int) -> None:
    if (change := _retention_change(client, table, column, days)) is not None:
        client.command(change)


def _retention_change(client: Client, table: str, column: str, days: int) -> str | None:
    current = catalog(client, table, "create_table_query")
    wanted = f"TTL toDateTime({column}) + toIntervalDay({days + RETENTION_GRACE_DAYS})"
    if days > 0 and wanted not in current:
        return f"ALTER TABLE {table} MODIFY {wanted}"
    if days == 0 and " TTL " in current:
        return f"ALTER TABLE {table} REMOVE TTL"
    return None
