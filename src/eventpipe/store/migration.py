"""Ordered schema migrations, applied idempotently and recorded in schema_migrations.

The DDL of every version lives in store.schema, beside the tables it made; this
module runs the versions in order and says what a backup and a restore do with
each table. The steps that copy a table are store.swap's, retention's TTL is
store.retention's."""

from __future__ import annotations

import logging
import re
import time

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError, ConfigError
from eventpipe.store.disk import room_for_schema
from eventpipe.store.failure import classified
from eventpipe.store.restoration import unfinished_restore
from eventpipe.store.retention import apply_retention
from eventpipe.store.schema import arrival, durability, event, index, record
from eventpipe.store.schema.arrival import ARRIVAL_ROWS
from eventpipe.store.schema.index import UNDATED_ROWS, USER_ROWS
from eventpipe.store.schema.record import BACKUP_CATALOG, ERASURE_KEYS, ERASURES, KEPT_COLUMNS, RESTORES
from eventpipe.store.schema.version import Migration
from eventpipe.store.scratch import drop_leftovers
from eventpipe.store.swap import rebuild_table, refill_table
from eventpipe.store.system import names

log = logging.getLogger(__name__)

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

# A statement, not client.insert: the insert's native encoding took 32 ms a row in chDB against 12 ms,
# over a third of migrating an empty store, which every `eventpipe up` on a new data dir and most tests do.
RECORD = "INSERT INTO schema_migrations (version, name) VALUES ({version:UInt32}, {name:String})"

# Append only. Every statement must be safe to run again, because two
# migrators may race or one may die between a statement and its ledger row.
# Each module of store.schema holds the versions that made its tables; run in
# version order, whichever module a version is in.
MIGRATIONS: tuple[Migration, ...] = tuple(
    sorted(
        event.MIGRATIONS + index.MIGRATIONS + arrival.MIGRATIONS + record.MIGRATIONS + durability.MIGRATIONS,
        key=lambda m: m.version,
    )
)

# What a backup and a restore do with each table (store.backup). Every table
# a migration creates is in one of these three, or a test fails: a new table
# needs that decision.
# - SOURCE: written by the pipe or by operators; a restore brings back what
#   the backup holds. BACKUP snapshots each table at its own moment, so these
#   are only each consistent in itself, which is all they need: a batch's
#   events and its dead letters are two inserts already (a crash between them
#   is absorbed by redelivery), and schema_migrations changes only while
#   `migrate` runs. worker_marks too since migration 14 (the workers write
#   it): a restore retires every worker its marks hold as running, and each
#   marks itself running again at its start (store.backup.RETIRE_RESTORED).
# - DERIVED: fed from events inserts (views, the writer), so a snapshot taken
#   a moment before or after events' own would disagree with it: an event
#   missing from events_by_user is missing from that user's pages. A restore
#   rebuilds each from the restored events with these queries, as migrations 6
#   and 9 filled them. (The id lookup is a projection of events since
#   migration 13, so it is in events' own snapshot.)
# - KEPT: about backups and restores themselves, the erasure audit, and the ids erasures under way
#   read (store.concealment), which no backup may hold; left out of every
#   backup, untouched by a restore (created again if a restore finds it
#   missing), so that a restore does not forget the backups taken after the
#   one it brings back, nor the erasures made since (operations.md, "Erasure:
#   what it cannot reach").
SOURCE = ("schema_migrations", "events", "dead_letters", "dead_letter_outcomes", "worker_marks")
DERIVED = {
    "events_by_user": USER_ROWS,
    "undated_events": UNDATED_ROWS,
    # Rebuilt, so numbered afresh: a feed token from before the restore is refused (store.feed).
    "arrivals": ARRIVAL_ROWS,
}
KEPT = {"backups": BACKUP_CATALOG, "erasures": ERASURES, "restores": RESTORES, "erasure_keys": ERASURE_KEYS}


# What a restore needs in a backup whatever its version: migrations 1 and 2 made them, every version reads them.
REQUIRED = ("schema_migrations", "events", "dead_letters")
_CREATED = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)")
_ENGINE = re.compile(r"ENGINE = (\w+)")


def engines() -> dict[str, frozenset[str]]:
    """Each table of SOURCE and DERIVED, with the engines the migrations made it with at one version or
    another: a table of that name with none of them is not eventpipe's (store.integrity.ours)."""
    creates: list[tuple[str | None, str]] = [(None, LEDGER)]
    for migration in MIGRATIONS:
        creates += [(None, statement) for statement in migration.statements]
        creates += [(step.table, step.create) for step in migration.rebuilds]
        creates += [(step.table, step.create) for step in migration.refills]
    made: dict[str, set[str]] = {}
    for table, create in creates:
        name = table or ((found := _CREATED.search(create)) and found.group(1))
        engine = _ENGINE.search(create)
        if name and engine and name in (*SOURCE, *DERIVED):
            made.setdefault(name, set()).add(engine.group(1))
    return {table: frozenset(names) for table, names in made.items()}


def keep_up(client: Client) -> None:
    """The KEPT tables as this version writes them, whatever the ledger says (a restore replaces the
    ledger, not these tables): created where missing, their added columns added where missing.

    Only what is missing is sent: chDB writes a table's definition again on every ALTER, one that adds
    nothing too, so each start rewrote `restores` and `erasures`, and a start on a full disk left
    restores.sql empty, which no later start could read."""
    with classified():
        rows = client.query(KEPT_COLUMNS_SQL, parameters={"t": list(KEPT)}).result_rows
    have = {(str(table), str(column)) for table, column in rows}
    tables = {table for table, _ in have}
    missing = [create for table, create in KEPT.items() if table not in tables]
    # As migrations 22 and 23 left every table: each insert, merge and mutation on the disk before it ends.
    missing += [durability.synced(table) for table in KEPT if table not in tables]
    # A table made now has every column already.
    missing += [
        alter for (table, column), alter in KEPT_COLUMNS.items() if table in tables and (table, column) not in have
    ]
    if missing:
        room_for_schema(client)
    with classified():
        for statement in missing:
            client.command(statement)


KEPT_COLUMNS_SQL = (
    "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND table IN {t:Array(String)}"
)


def migrate(client: Client, retention_days: int = 0) -> list[int]:
    """upgrade(), for whatever is about to serve the store, after dropping the copies of backups killed
    restores left (store.scratch): refuses (BackupError) one a restore left half done, as workers and the
    API started on it served a store whose derived tables were empty (an attack saw a user's pages answer
    nothing while `events` held 998,478 rows). Checked first: upgrade() would make a dropped ledger again.
    A store of a newer eventpipe is refused before either, which write to it."""
    with classified():
        version = _version(client)
    known_to_this_version(version, "the store")
    drop_leftovers(client)
    keep_up(client)  # the restores' columns the check reads, on a store from before them
    half = unfinished_restore(client)
    if half is not None:
        raise BackupError(
            f"the store is half restored: the restore of {half.backup} stopped after it began dropping the"
            f" tables; {half.advice()}, before starting"
        )
    return upgrade(client, retention_days)


def upgrade(client: Client, retention_days: int = 0) -> list[int]:
    """Apply pending migrations in order, then the retention TTL; return the versions applied. The
    restore calls this one, as it is what finishes a half-restored store."""
    with classified():
        client.command(LEDGER)
        done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
    known_to_this_version(max(done, default=0), "the store")
    with classified():
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            room_for_schema(client)  # before each: a refused one was not begun (earlier ones stay done)
            # Said before, not only after: on an old store one took half a minute without a line.
            log.info("applying migration %d: %s", migration.version, migration.name)
            started = time.monotonic()
            for statement in migration.statements:
                # Before each, not only the first: one before it (a copy, a projection's build) may have
                # taken the room, and the next would write a definition onto the full disk.
                room_for_schema(client)
                client.command(statement)
            for rebuild in migration.rebuilds:
                rebuild_table(client, rebuild)
            for refill in migration.refills:
                refill_table(client, refill, retention_days)
            client.command(RECORD, parameters={"version": migration.version, "name": migration.name})
            log.info("applied migration %d in %.1f s", migration.version, time.monotonic() - started)
            applied.append(migration.version)
        apply_retention(client, retention_days)
        return applied


def known_to_this_version(version: int, what: str) -> None:
    """ConfigError if schema `version` is newer than any this code knows: it would say the schema was
    current and serve a store whose tables it does not know (an attack's older API failed on them)."""
    newest = MIGRATIONS[-1].version
    if version > newest:
        raise ConfigError(
            f"{what} is at schema version {version}, this eventpipe knows up to {newest}: run the newer"
            " eventpipe, or restore a backup taken by this version"
        )


def _version(client: Client) -> int:
    """The newest migration the ledger records, 0 without a ledger."""
    if not names("system.tables", "name = {t:String}", "schema_migrations", client):
        return 0
    return int(str(client.command("SELECT max(version) FROM schema_migrations") or 0))
