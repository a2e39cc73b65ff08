"""Ordered schema migrations, applied idempotently and recorded in schema_migrations.

The DDL of every version lives in store.schema, beside the tables it made; this
module runs the versions in order and says what a backup, a restore and
retention do with each table."""

from __future__ import annotations

import logging
import re

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError, ConfigError, HaltStorageError
from eventpipe.store.disk import room_for_schema
from eventpipe.store.failure import classified
from eventpipe.store.halfway import unfinished_restore
from eventpipe.store.schema import arrival, event, index, record
from eventpipe.store.schema.arrival import ARRIVAL_ROWS
from eventpipe.store.schema.index import UNDATED_ROWS, USER_ROWS
from eventpipe.store.schema.record import BACKUP_CATALOG, ERASURE_KEYS, ERASURES, KEPT_COLUMNS, RESTORES
from eventpipe.store.schema.version import DEFINER, REBUILT, REFILLED, Migration, Rebuild, Refill
from eventpipe.store.scratch import drop_leftovers

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
    sorted(event.MIGRATIONS + index.MIGRATIONS + arrival.MIGRATIONS + record.MIGRATIONS, key=lambda m: m.version)
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
#   it): a restored mark is older than any a restarted worker writes, so it
#   can only hold the feed's complete_until back until then.
# - DERIVED: fed from events inserts (views, the writer), so a snapshot taken
#   a moment before or after events' own would disagree with it: an event
#   missing from events_by_user is missing from that user's pages. A restore
#   rebuilds each from the restored events with these queries, as migrations 6
#   and 9 filled them. (The id lookup is a projection of events since
#   migration 13, so it is in events' own snapshot.)
# - KEPT: about backups and restores themselves, the erasure audit, and the ids erasures under way
#   read (store.hidden), which no backup may hold; left out of every
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
            for statement in migration.statements:
                client.command(statement)
            for rebuild in migration.rebuilds:
                _rebuild(client, rebuild)
            for refill in migration.refills:
                _refill(client, refill, retention_days)
            client.command(RECORD, parameters={"version": migration.version, "name": migration.name})
            log.info("applied migration %d: %s", migration.version, migration.name)
            applied.append(migration.version)
        _apply_retention(client, retention_days)
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


def _rebuild(client: Client, rebuild: Rebuild) -> None:
    # Copy, swap, copy again, drop. The second copy takes rows a worker still
    # running the old version wrote to the old table during the first; copies
    # of a row collapse, so copying twice is harmless. Stop workers for this
    # migration anyway: an insert in flight across the swap could be missed.
    table, scratch = rebuild.table, rebuild.table + REBUILT
    final = " FINAL" if rebuild.collapse else ""
    if not _rebuilt(client, rebuild):
        client.command(f"DROP TABLE IF EXISTS {scratch}")  # a half-filled copy from a crashed run
        client.command(rebuild.create.format(table=scratch))
        made = _catalog(client, scratch, "uuid")
        client.command(f"INSERT INTO {scratch} SELECT * FROM {table}{final}")  # noqa: S608 - names are constants
        # As in _refill, migrators must take turns. Without these checks a second one dropped the first's
        # copy and made its own, both swapped, the second swap put the old table back, and the ledger said
        # done over the old definition (found by an attack): now whichever sees another's hand stops, and
        # a rerun finishes from whatever state the two left.
        if _catalog(client, scratch, "uuid") != made or _rebuilt(client, rebuild):
            raise HaltStorageError(f"{scratch} was made again during the copy: is another migrator running?")
        client.command(f"EXCHANGE TABLES {table} AND {scratch}")
        if _catalog(client, table, "uuid") != made:
            raise HaltStorageError(f"{table} was swapped by another migrator too: run migrate again, alone")
    # From here on `scratch`, if it is there, is the old table.
    if scratch in _names("system.tables", "name = {t:String}", scratch, client):
        client.command(f"INSERT INTO {table} SELECT * FROM {scratch}{final}")  # noqa: S608 - names are constants
        client.command(f"DROP TABLE {scratch}")
        log.info("rebuilt table %s", table)


def _refill(client: Client, refill: Refill, retention_days: int) -> None:
    # A second view feeds the new table from the moment it exists, so a row
    # inserted during the copy is in it twice at most (copies collapse) and
    # never missing. Whether a view follows its target's name through the
    # swap or keeps the table it had, one of the two writes to the new table
    # until the view made after the swap, which names it for sure, takes over.
    # An insert takes the views that exist when it starts: one in flight when
    # the feed was made, committed after the copy read the table, is in
    # neither, so the parts of the source committed after the block number
    # noted first are copied again at the end.
    table, scratch = refill.table, refill.table + REFILLED
    feed = f"{scratch}_feed"
    if refill.marker not in _catalog(client, table, "engine_full"):
        # Not swapped yet: what a crashed run left is started afresh.
        client.command(f"DROP VIEW IF EXISTS {feed}")
        client.command(f"DROP TABLE IF EXISTS {scratch} SYNC")
        block = int(str(client.command(LAST_BLOCK, parameters={"t": refill.source}) or 0))
        note = f" COMMENT 'filled from {refill.source} after block {block}'"
        client.command(refill.create.format(table=scratch) + note)
        _retain(client, scratch, RETAINED[table], retention_days)  # empty: no rewrite, unlike after the copy
        made = _catalog(client, scratch, "uuid")
        client.command(f"CREATE MATERIALIZED VIEW {feed} TO {scratch} {DEFINER} AS {refill.rows}")
        client.command(f"INSERT INTO {scratch} {refill.rows}")
        if _catalog(client, scratch, "uuid") != made:
            # Migrators of this step must take turns (compose's one-shot `migrate`
            # and `eventpipe up` run one): a second drops the first's copy and
            # begins its own. This stops the worst of it, a copy begun later swapped in.
            raise HaltStorageError(f"{scratch} was made again during the copy: is another migrator running?")
        client.command(f"EXCHANGE TABLES {table} AND {scratch}")
    # From here on `scratch`, if it is there, is the old table, and a rerun
    # only finishes the views: the copy (minutes at 100M events) is made once.
    client.command(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {refill.view} TO {table} {DEFINER} AS {refill.rows}")
    client.command(f"DROP VIEW IF EXISTS {refill.replaces}")
    client.command(f"DROP VIEW IF EXISTS {feed}")
    # Before the old table goes: while it is there an erasure refuses to start
    # (store.erasure), and this copy could bring back rows one deleted.
    block = _filled_after(client, table)
    client.command(f"INSERT INTO {table} {refill.rows} AND {AFTER_BLOCK}", parameters={"block": block})
    client.command(f"DROP TABLE IF EXISTS {scratch} SYNC")
    log.info("refilled table %s", table)


# The last block number written to a table; a part's name ends in its blocks'
# range and its level (partition_min_max_level[_mutation]), whatever merged or
# mutated it, so the rows committed after a block are found by name.
LAST_BLOCK = "SELECT max(max_block_number) FROM system.parts WHERE database = currentDatabase() AND table = {t:String}"
AFTER_BLOCK = "toUInt64(splitByChar('_', _part)[3]) > {block:UInt64}"


def _filled_after(client: Client, table: str) -> int:
    last = _catalog(client, table, "comment").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


# The columns of system.tables the migrations read, checked before one is
# spliced into a query.
CATALOG = frozenset({"comment", "create_table_query", "engine_full", "sorting_key", "uuid"})


def _catalog(client: Client, table: str, column: str) -> str:
    """One column of `table`'s row in system.tables; empty if there is no such table."""
    if column not in CATALOG:
        raise ValueError(f"not a column the migrations read: {column!r}")
    sql = f"SELECT {column} FROM system.tables WHERE database = currentDatabase() AND name = {{t:String}}"  # noqa: S608
    found = client.query(sql, parameters={"t": table}).result_rows
    return str(found[0][0]) if found else ""


def _rebuilt(client: Client, rebuild: Rebuild) -> bool:
    if rebuild.sorting_key:
        return _catalog(client, rebuild.table, "sorting_key") == rebuild.marker
    return rebuild.marker in _names("system.columns", "table = {t:String}", rebuild.table, client)


def _version(client: Client) -> int:
    """The newest migration the ledger records, 0 without a ledger."""
    if not _names("system.tables", "name = {t:String}", "schema_migrations", client):
        return 0
    return int(str(client.command("SELECT max(version) FROM schema_migrations") or 0))


def _names(source: str, condition: str, value: str, client: Client) -> set[str]:
    sql = f"SELECT name FROM {source} WHERE database = currentDatabase() AND {condition}"  # noqa: S608 - constants
    return {str(row[0]) for row in client.query(sql, parameters={"t": value}).result_rows}


def _apply_retention(client: Client, days: int) -> None:
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


def _retain(client: Client, table: str, column: str, days: int) -> None:
    if (change := _retention_change(client, table, column, days)) is not None:
        client.command(change)


def _retention_change(client: Client, table: str, column: str, days: int) -> str | None:
    current = _catalog(client, table, "create_table_query")
    wanted = f"TTL toDateTime({column}) + toIntervalDay({days + RETENTION_GRACE_DAYS})"
    if days > 0 and wanted not in current:
        return f"ALTER TABLE {table} MODIFY {wanted}"
    if days == 0 and " TTL " in current:
        return f"ALTER TABLE {table} REMOVE TTL"
    return None
