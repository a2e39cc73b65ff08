"""Ordered schema migrations, applied idempotently and recorded in schema_migrations."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from eventpipe.events import PROBE_EVENT_TYPE
from eventpipe.store.failure import classified

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rebuild:
    """Recreate a table under a new definition (ClickHouse cannot ALTER an engine) and copy its rows.

    `create` names the table {table}; the step is done once `marker` is one of
    the table's columns (or, with `sorting_key`, once the table is sorted by
    `marker`), so a rerun after a crash at any point is safe."""

    table: str
    create: str
    marker: str
    sorting_key: bool = False
    # Copy what FINAL shows, not every stored row: for a new sort key under
    # which copies the old key collapsed would no longer meet.
    collapse: bool = False


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...] = ()
    rebuilds: tuple[Rebuild, ...] = ()


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

# Copies of one message (redeliveries) must keep the first one's row: an
# event without a timestamp is stamped with its receive time, so a later copy
# would move it in time under a client paging through it, or into another
# month's partition, which a server before 26.3 prunes before FINAL. The
# version is the receive time reversed, and ReplacingMergeTree keeps the
# highest version, so the earliest copy wins whatever order merges run in.
# first_copy ranks the earliest receipt highest; the writer computes the same for undated_events.
FIRST_COPY_BASE = 2**64 - 1
FIRST_COPY_WINS = f"first_copy UInt64 MATERIALIZED {FIRST_COPY_BASE} - toUInt64(toUnixTimestamp64Milli(received_at))"

MIGRATIONS += (
    Migration(
        3,
        "keep the first copy of a redelivered event or dead letter",
        rebuilds=(
            Rebuild(
                "events",
                """
CREATE TABLE {table}
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id Nullable(String),
    topic LowCardinality(String),
    properties String CODEC(ZSTD(3)),
    FIRST_COPY_WINS,
    INDEX timestamp_minmax timestamp TYPE minmax GRANULARITY 1,
    INDEX user_bloom user_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(first_copy)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (event_type, event_id)
""".replace("FIRST_COPY_WINS", FIRST_COPY_WINS),
                "first_copy",
            ),
            Rebuild(
                "dead_letters",
                """
CREATE TABLE {table}
(
    dead_letter_id String,
    received_at DateTime64(3, 'UTC'),
    topic String,
    reason LowCardinality(String),
    detail String,
    payload String CODEC(ZSTD(3)),
    payload_size UInt32,
    FIRST_COPY_WINS
)
ENGINE = ReplacingMergeTree(first_copy)
PARTITION BY toYYYYMM(received_at)
ORDER BY dead_letter_id
""".replace("FIRST_COPY_WINS", FIRST_COPY_WINS),
                "first_copy",
            ),
        ),
    ),
)

MIGRATIONS += (
    # GET /events/{id} filters on event_id alone, the second column of the sort
    # key: without an index it reads every granule (measured 92 ms at 1M
    # events, 14 ms with it). All copies of an event share its id, so skipping
    # granules by id can never hide the copy FINAL would keep.
    Migration(
        4,
        "index event ids for lookups by id",
        (
            "ALTER TABLE events ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1",
            "ALTER TABLE events MATERIALIZE INDEX event_id_bloom",
        ),
    ),
)

# Reads cost what their window holds only if the table is sorted by time:
# streaming inserts then make parts that cover the last seconds and overlap
# nothing older, and FINAL merges just the granules a query's time range
# selects (measured at 10M events: newest page 1,038 -> 24 ms, last-hour page
# 540 -> 4 ms). Copies of an event keep one sort key (timestamp, type, id),
# so they still collapse under FINAL; the store makes that hold for events
# without their own timestamp too (undated_events below). The partition is a
# function of the sort key's first column, so copies never sit in two
# partitions.
EVENTS_BY_TIME = """
CREATE TABLE {table}
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id Nullable(String),
    topic LowCardinality(String),
    properties String CODEC(ZSTD(3)),
    FIRST_COPY_WINS,
    INDEX user_bloom user_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX received_minmax received_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(first_copy)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, event_type, event_id)
""".replace("FIRST_COPY_WINS", FIRST_COPY_WINS)

# A user's events sorted by user, then time: a page of one user reads that
# user's rows only, where the time-sorted table would scan until it found
# 100 of them (194 ms at 10M events, growing with the table). Fed by a
# materialized view in the same insert, so it holds exactly what `events`
# holds, copies included, and collapses them the same way.
EVENTS_BY_USER = """
CREATE TABLE IF NOT EXISTS events_by_user
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id String,
    topic LowCardinality(String),
    properties String CODEC(ZSTD(3)),
    first_copy UInt64
)
ENGINE = ReplacingMergeTree(first_copy)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (user_id, timestamp, event_type, event_id)
"""
BY_USER_ROWS = (
    "SELECT event_id, event_type, timestamp, received_at, assumeNotNull(user_id) AS user_id, topic, properties,"
    " first_copy FROM events WHERE user_id IS NOT NULL"
)

# An event without its own timestamp is stamped with its receive time, so a
# later copy of it (a redelivery, a producer's re-send) would get another
# sort key and show twice. The writer looks its id up here first and gives
# the copy the first copy's time. Keyed by id alone, so a lookup reads a few
# granules whatever the time; it holds only such events (timestamp equal to
# receive time), a small share of the traffic.
UNDATED_EVENTS = """
CREATE TABLE IF NOT EXISTS undated_events
(
    event_type LowCardinality(String),
    event_id String,
    timestamp DateTime64(3, 'UTC'),
    first_copy UInt64
)
ENGINE = ReplacingMergeTree(first_copy)
ORDER BY (event_type, event_id)
SETTINGS index_granularity = 1024
"""
# Explicit, not the server's default: the worker only has INSERT on events,
# and the views write on with the rights of whoever created them (the migrator).
DEFINER = "DEFINER = CURRENT_USER SQL SECURITY DEFINER"
UNDATED_ROWS = "SELECT event_type, event_id, timestamp, first_copy FROM events WHERE timestamp = received_at"

MIGRATIONS += (
    Migration(
        5,
        "sort events by time",
        # Copies of an undated event stored before this version carry their own
        # receive times; the old key collapsed them, the new one would not,
        # so the copy takes the first copy only (what every read showed).
        rebuilds=(
            Rebuild("events", EVENTS_BY_TIME, "timestamp, event_type, event_id", sorting_key=True, collapse=True),
        ),
    ),
    # Views first, then the copy of what is already stored: a row inserted
    # in between is in both, and its two copies collapse. A rerun after a
    # crash copies again, harmlessly for the same reason.
    Migration(
        6,
        "index events by user and undated events by id",
        (
            EVENTS_BY_USER,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_user_feed TO events_by_user {DEFINER} AS {BY_USER_ROWS}",
            UNDATED_EVENTS,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS undated_events_feed TO undated_events {DEFINER} AS {UNDATED_ROWS}",
            f"INSERT INTO events_by_user {BY_USER_ROWS}",
            f"INSERT INTO undated_events {UNDATED_ROWS}",
        ),
    ),
)

# By id, the time-sorted `events` could only test a bloom filter in every
# granule: 107 ms at 100M events, 9x its own figure at 1M, and the filter
# cost every insert. event_ids is sorted by id, so a lookup reads one granule
# whatever the table holds, then the row is fetched by its sort key. Fed in
# the same insert; copies hold the same key and are harmless in a lookup.
# The user filter has had events_by_user since migration 6: its bloom filter
# only slowed inserts.
EVENT_IDS = """
CREATE TABLE IF NOT EXISTS event_ids
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (event_id, event_type, timestamp)
SETTINGS index_granularity = 1024
"""
ID_ROWS = "SELECT event_id, event_type, timestamp FROM events"

MIGRATIONS += (
    Migration(
        7,
        "index events by id instead of bloom filters",
        (
            EVENT_IDS,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_feed TO event_ids {DEFINER} AS {ID_ROWS}",
            f"INSERT INTO event_ids {ID_ROWS}",
            "ALTER TABLE events DROP INDEX IF EXISTS event_id_bloom",
            "ALTER TABLE events DROP INDEX IF EXISTS user_bloom",
        ),
    ),
)

# undated_events is written by the writer itself, before the events of a
# batch (Writer._record_undated): its view wrote after the events part was
# committed, and a worker killed in between lost the first copy's time.
MIGRATIONS += (Migration(8, "record undated events before storing them", ("DROP VIEW IF EXISTS undated_events_feed",)),)

# The arrival feed (GET /feed) needs an order that a client can follow without
# missing an event committed late or twice by a redelivery. ClickHouse gives
# every part a block number, taken and committed under one lock in a
# non-replicated MergeTree, so numbers follow commit order: once a part is
# visible, every part with a lower number is too. `arrivals` keeps every copy
# of every stored event (a plain MergeTree collapses nothing), and with
# enable_block_number_column each row keeps its part's number through merges
# (set here, not left to a default the server might not share). An event's
# place in the feed is the lowest number among its copies, which never changes
# once it is visible. Sorted like `events`, so copies of an event sit together
# and a page reads a key range. Fed in the same insert; copies made by a rerun
# of the copy below are copies like any other (store.feed).
ARRIVALS = """
CREATE TABLE IF NOT EXISTS arrivals
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id Nullable(String),
    topic LowCardinality(String),
    properties String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, event_type, event_id)
SETTINGS enable_block_number_column = 1
"""
ARRIVAL_ROWS = "SELECT event_id, event_type, timestamp, received_at, user_id, topic, properties FROM events"

# What each worker has committed: a mark it stores in a batch says that every
# message it received before `complete_before` is in an earlier batch, so
# committed before the mark was written (ingest.mark). GET /feed reads the
# newest mark of every worker for its complete_until; `retired` is a worker
# that stopped with nothing held. Keyed by worker, newest mark kept.
MARK_WORKER, MARK_COMPLETE_BEFORE, MARK_RETIRED = "worker", "complete_before", "retired"
WORKER_MARKS = """
CREATE TABLE IF NOT EXISTS worker_marks
(
    worker String,
    complete_before Int64,
    retired UInt8,
    written Int64
)
ENGINE = ReplacingMergeTree(written)
ORDER BY worker
"""
MARK_ROWS = (
    f"SELECT JSONExtractString(properties, '{MARK_WORKER}') AS worker,"  # noqa: S608 - constants
    f" JSONExtractInt(properties, '{MARK_COMPLETE_BEFORE}') AS complete_before,"
    f" toUInt8(JSONExtractBool(properties, '{MARK_RETIRED}')) AS retired,"
    " toUnixTimestamp64Milli(received_at) AS written FROM events"
    f" WHERE event_type = '{PROBE_EVENT_TYPE}' AND JSONHas(properties, '{MARK_WORKER}')"
    f" AND (JSONHas(properties, '{MARK_COMPLETE_BEFORE}') OR JSONHas(properties, '{MARK_RETIRED}'))"
)

MIGRATIONS += (
    # Numbered 9 by the arrival feed; views first, then the copy of what is
    # stored, so a row inserted in between is in arrivals twice, which the
    # feed reads as two copies of one event. A rerun after a crash copies again,
    # harmlessly for the same reason.
    Migration(
        9,
        "keep every stored copy in arrival order for the feed",
        (
            ARRIVALS,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS arrivals_feed TO arrivals {DEFINER} AS {ARRIVAL_ROWS}",
            WORKER_MARKS,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS worker_marks_feed TO worker_marks {DEFINER} AS {MARK_ROWS}",
            f"INSERT INTO arrivals {ARRIVAL_ROWS}",
        ),
    ),
)
# The backups taken (store.backup), so that GET /admin/backups can list them
# with what each holds: a server's backups disk cannot be listed through SQL.
BACKUP_CATALOG = """
CREATE TABLE IF NOT EXISTS backups
(
    name String,
    taken_at DateTime64(3, 'UTC'),
    events UInt64,
    dead_letters UInt64,
    bytes UInt64,
    taken_by String
)
ENGINE = ReplacingMergeTree
ORDER BY name
"""

MIGRATIONS += (Migration(10, "record backups", (BACKUP_CATALOG,)),)

# Migration 6's view named its assumeNotNull(user_id) "user_id", and WHERE
# resolved that alias, not the column: every event without a user went into
# events_by_user as user ''. That doubled the index for such traffic, and a
# filter on user_id = '' found them there but not in events. The new view
# goes in before the old one goes out, so no insert misses both (one caught
# by both stores two copies, which collapse); the rows already there are
# deleted in the background.
USER_ROWS = (
    "SELECT event_id, event_type, timestamp, received_at, user_id, topic, properties, first_copy"
    " FROM events WHERE user_id IS NOT NULL"
)
MIGRATIONS += (
    Migration(
        11,
        "index only events that have a user",
        (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_user_feed_v2 TO events_by_user {DEFINER} AS {USER_ROWS}",
            "DROP VIEW IF EXISTS events_by_user_feed",
            "ALTER TABLE events_by_user DELETE WHERE user_id = ''",
        ),
    ),
)

# What became of each dead letter a replay tried (POST /admin/dead-letters/replay):
# appended, never updated, so a replay costs an insert and no mutation, and a
# letter's payload is not copied into a new row version. A letter is replayed
# when a row says so, failed when only others exist, pending without any. Keyed
# by (letter, status), the newest attempt of each kept. `contract` names the
# parser and limits an attempt ran under: a failed letter is tried again only
# under others (ingest.replay).
DEAD_LETTER_OUTCOMES = """
CREATE TABLE IF NOT EXISTS dead_letter_outcomes
(
    dead_letter_id String,
    attempted_at DateTime64(3, 'UTC'),
    status LowCardinality(String),
    contract String,
    reason LowCardinality(String),
    detail String
)
ENGINE = ReplacingMergeTree(attempted_at)
ORDER BY (dead_letter_id, status)
"""

# One row per erasure (POST /admin/erase), for the audit: no user id, only its
# keyed hash (store.erasure). Append only: no TTL, no admin grant to delete.
ERASURES = """
CREATE TABLE IF NOT EXISTS erasures
(
    erasure_id String,
    erased_at DateTime64(3, 'UTC'),
    key_name String,
    user_hash String,
    events UInt64,
    dead_letters UInt64
)
ENGINE = MergeTree
ORDER BY (erased_at, erasure_id)
"""

# Numbered 12: 9 is the arrival feed's, 10 and 11 are above.
MIGRATIONS += (Migration(12, "record replay outcomes and erasures", (DEAD_LETTER_OUTCOMES, ERASURES)),)

# What a backup and a restore do with each table (store.backup). Every table
# a migration creates is in one of these three, or a test fails: a new table
# needs that decision.
# - SOURCE: written by the pipe or by operators; a restore brings back what
#   the backup holds. BACKUP snapshots each table at its own moment, so these
#   are only each consistent in itself, which is all they need: a batch's
#   events and its dead letters are two inserts already (a crash between them
#   is absorbed by redelivery), and schema_migrations changes only while
#   `migrate` runs.
# - DERIVED: fed from events inserts (views, the writer), so a snapshot taken
#   a moment before or after events' own would disagree with it: an event
#   missing from event_ids is missing from GET /events/{id}. A restore rebuilds
#   each from the restored events with these queries, as migrations 6 and 7
#   filled them.
# - KEPT: about backups themselves, and the erasure audit; left out of every
#   backup, untouched by a restore (created again if a restore finds it
#   missing), so that a restore does not forget the backups taken after the
#   one it brings back, nor the erasures made since (operations.md, "Erasure:
#   what it cannot reach").
SOURCE = ("schema_migrations", "events", "dead_letters", "dead_letter_outcomes")
DERIVED = {
    "events_by_user": USER_ROWS,
    "event_ids": ID_ROWS,
    "undated_events": UNDATED_ROWS,
    # Rebuilt, so numbered afresh: a feed token from before the restore is refused (store.feed).
    "arrivals": ARRIVAL_ROWS,
    "worker_marks": MARK_ROWS,
}
KEPT = {"backups": BACKUP_CATALOG, "erasures": ERASURES}

RETAINED = {
    "events": "timestamp",
    "events_by_user": "timestamp",
    "undated_events": "timestamp",
    "event_ids": "timestamp",
    "arrivals": "timestamp",
    "dead_letters": "received_at",
    "dead_letter_outcomes": "attempted_at",
}


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
            for rebuild in migration.rebuilds:
                _rebuild(client, rebuild)
            client.insert("schema_migrations", [[migration.version, migration.name]], column_names=["version", "name"])
            log.info("applied migration %d: %s", migration.version, migration.name)
            applied.append(migration.version)
        _apply_retention(client, retention_days)
        return applied


def _rebuild(client: Client, rebuild: Rebuild) -> None:
    # Copy, swap, copy again, drop. The second copy takes rows a worker still
    # running the old version wrote to the old table during the first; copies
    # of a row collapse, so copying twice is harmless. Stop workers for this
    # migration anyway: an insert in flight across the swap could be missed.
    table, scratch = rebuild.table, f"{rebuild.table}_rebuild"
    final = " FINAL" if rebuild.collapse else ""
    if not _rebuilt(client, rebuild):
        client.command(f"DROP TABLE IF EXISTS {scratch}")  # a half-filled copy from a crashed run
        client.command(rebuild.create.format(table=scratch))
        client.command(f"INSERT INTO {scratch} SELECT * FROM {table}{final}")  # noqa: S608 - names are constants
        client.command(f"EXCHANGE TABLES {table} AND {scratch}")
    # From here on `scratch`, if it is there, is the old table.
    if scratch in _names("system.tables", "name = {t:String}", scratch, client):
        client.command(f"INSERT INTO {table} SELECT * FROM {scratch}{final}")  # noqa: S608 - names are constants
        client.command(f"DROP TABLE {scratch}")
        log.info("rebuilt table %s", table)


def _rebuilt(client: Client, rebuild: Rebuild) -> bool:
    if rebuild.sorting_key:
        sql = "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = {t:String}"
        keys = {str(row[0]) for row in client.query(sql, parameters={"t": rebuild.table}).result_rows}
        return rebuild.marker in keys
    return rebuild.marker in _names("system.columns", "table = {t:String}", rebuild.table, client)


def _names(source: str, condition: str, value: str, client: Client) -> set[str]:
    sql = f"SELECT name FROM {source} WHERE database = currentDatabase() AND {condition}"  # noqa: S608 - constants
    return {str(row[0]) for row in client.query(sql, parameters={"t": value}).result_rows}


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
