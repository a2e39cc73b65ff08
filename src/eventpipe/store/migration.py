"""Ordered schema migrations, applied idempotently and recorded in schema_migrations."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""

# Append only. Every statement must be safe to run again, because two
# migrators may race or one may die between a statement and its ledger row.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "create events",
        (
            """
CREATE TABLE IF NOT EXISTS events
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id Nullable(String),
    topic LowCardinality(String),
    -- JSON object text. A String column inserts about 5x faster than the JSON
    -- type on the embedded engine (measured: 474k vs 98k rows/s per 10k batch),
    -- and JSONExtract*/::JSON read it at query time.
    properties String CODEC(ZSTD(3)),
    INDEX timestamp_minmax timestamp TYPE minmax GRANULARITY 1,
    INDEX user_bloom user_id TYPE bloom_filter(0.01) GRANULARITY 4
)
-- Redeliveries carry the same event_id; the sort key holds nothing that
-- differs between two deliveries (not received_at, not a defaulted
-- timestamp), so merges and FINAL collapse them.
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (event_type, event_id)
""",
        ),
    ),
    Migration(
        2,
        "create dead_letters",
        (
            """
CREATE TABLE IF NOT EXISTS dead_letters
(
    dead_letter_id String,
    received_at DateTime64(3, 'UTC'),
    topic String,
    reason LowCardinality(String),
    detail String,
    payload String CODEC(ZSTD(3)),
    payload_size UInt32
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY dead_letter_id
""",
        ),
    ),
)

RETAINED = {"events": "timestamp", "dead_letters": "received_at"}


def migrate(client: Client, retention_days: int = 0) -> list[int]:
    """Apply pending migrations in order, then the retention TTL; return the versions applied."""
    with classified():
        client.command(LEDGER)
        done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                client.command(statement)
            client.insert("schema_migrations", [[migration.version, migration.name]], column_names=["version", "name"])
            log.info("applied migration %d: %s", migration.version, migration.name)
            applied.append(migration.version)
        _apply_retention(client, retention_days)
        return applied


def _apply_retention(client: Client, days: int) -> None:
    # Retention is configuration, not schema history, so it is set on every
    # run to whatever the settings say now; unchanged, it is left alone, since
    # MODIFY TTL makes ClickHouse rewrite the table.
    days = int(days)
    for table, column in RETAINED.items():
        current = str(
            client.command(
                "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                parameters={"t": table},
            )
        )
        wanted = f"TTL toDateTime({column}) + toIntervalDay({days})"
        if days > 0 and wanted not in current:
            client.command(f"ALTER TABLE {table} MODIFY {wanted}")
        elif days == 0 and " TTL " in current:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
