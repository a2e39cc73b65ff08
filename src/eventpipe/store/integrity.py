"""What a backup must not hold, and what a restore must not trust: erased rows, damaged files.

`purge` runs before BACKUP: BACKUP copies parts as they are, and a lightweight
DELETE only masks rows until a merge drops them, so an attack read an erased
user's 600 rows, properties and all, out of every backup taken after the
erasure (apply_deleted_mask = 0). `verify` runs before a restore drops
anything: an attack's backup with 64 flipped bytes dropped the live store and
failed halfway, and damage in a projection (the id lookup's) got past a read of
every column; CHECK TABLE checks every file of every part against its checksums.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error

from eventpipe.errors import BackupError, ConfigError
from eventpipe.store import job
from eventpipe.store.disk import MIB, MIN_FREE_BYTES, short_of_room
from eventpipe.store.failure import classified
from eventpipe.store.migration import REQUIRED, engines, known_to_this_version
from eventpipe.store.query import quoted

POLL_S = 0.1
TABLES = "SELECT name, engine FROM system.tables WHERE database = {d:String}"
LEDGER_COLUMNS = "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = 'schema_migrations'"
# The ledger's columns every version has read (migration.LEDGER): what the version check relies on.
LEDGER_KEYS = (("version", "UInt32"), ("name", "String"))
# A purge rewrites the parts an erasure touched, at most the tables once: minutes at 100M events.
PURGE_TIMEOUT_S = 15 * 60
# What checking a damaged backup file raises (a file cut short, missing, or changed).
DAMAGED_CODES = frozenset({
    3,  # UNEXPECTED_END_OF_FILE
    32,  # ATTEMPT_TO_READ_AFTER_EOF
    33,  # CANNOT_READ_ALL_DATA
    40,  # CHECKSUM_DOESNT_MATCH
    76,  # CANNOT_OPEN_FILE
    107,  # FILE_DOESNT_EXIST
    246,  # CORRUPTED_DATA
    271,  # CANNOT_DECOMPRESS
    601,  # BACKUP_DAMAGED (its `.backup` valid XML without the file list)
})  # fmt: skip


MASKED = (
    "SELECT table, sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() AND active"
    " AND has_lightweight_delete AND table NOT IN {kept:Array(String)} GROUP BY table ORDER BY table"
)


def masked_bytes(client: Client, kept: list[str]) -> int:
    """The bytes of the parts a purge rewrites (those holding masked rows, of every table but `kept`)."""
    return sum(int(str(size)) for _table, size in _rows(client, MASKED, {"kept": kept}))


def purge(client: Client, database: str, kept: list[str]) -> None:
    """Rewrite the parts that hold masked rows without them (only those parts), and wait for it."""
    parts = _rows(client, MASKED, {"kept": kept})
    # A mutation on a full disk waits for room with no reason given and may leave an empty mutation file
    # that stops the next start (docs/runbooks.md, ClickHouseDiskFull); the backups disk may have room.
    # It writes each part anew beside the old one, which stays until ClickHouse removes it minutes later:
    # room for all of them (an attack's purge of every table filled the disk), and the floor on top.
    rewrites = sum(int(str(size)) for _table, size in parts)
    if parts and (free := short_of_room(client, rewrites)) is not None:
        raise BackupError(
            f"ClickHouse's data disk has {free // MIB} MiB free, and a backup first rewrites the parts that "
            f"erasures masked, {rewrites // MIB} MiB, with {MIN_FREE_BYTES // MIB} MiB to spare: "
            "free space (a retention, old data), then back up again"
        )
    for table, _size in parts:
        with classified():
            client.command(f"ALTER TABLE {quoted(database)}.{quoted(table)} APPLY DELETED MASK")
        # Polled, as BACKUP and RESTORE are, so a long rewrite outlasts no read timeout.
        deadline = time.monotonic() + PURGE_TIMEOUT_S
        while pending := _rows(
            client,
            "SELECT latest_fail_reason FROM system.mutations WHERE database = currentDatabase()"
            " AND table = {t:String} AND NOT is_done",
            {"t": table},
        ):
            if any(str(reason) for (reason,) in pending):
                raise BackupError(f"purging erased rows from {table} failed: {pending[0][0]}")
            if time.monotonic() > deadline:
                raise BackupError(
                    f"purging erased rows from {table} took over {PURGE_TIMEOUT_S} s: see system.mutations"
                )
            time.sleep(POLL_S)


def verify(client: Client, scratch: str, name: str) -> None:
    """CHECK TABLE every table of the backup attached as `scratch`; BackupError naming the first damage."""
    listed = _rows(
        client,
        "SELECT name FROM system.tables WHERE database = {d:String} AND engine LIKE '%MergeTree'",
        {"d": scratch},
    )
    for (table,) in listed:
        checked = f"CHECK TABLE {quoted(scratch)}.{quoted(table)}"
        with reading_back(name, table):
            # The verdict on every part as one value, set in the query. Part by part, the driver read the
            # embedded engine's answer as one row of all the parts' fields, and a check of its first
            # part's alone let a damaged later part through to a restore that failed after the drop.
            whole = client.query(f"{checked} SETTINGS check_query_single_value_result = 1").result_rows
        if whole and int(str(whole[0][0])):
            continue
        with reading_back(name, table):
            # Only to name the part at fault: one JSON line a part, read as text.
            lines = client.raw_query(f"{checked} SETTINGS check_query_single_value_result = 0", fmt="JSONEachRow")
        failed = [part for part in map(json.loads, lines.splitlines()) if not int(part.get("is_passed", 0))]
        detail = f", part {failed[0].get('part_path')}: {failed[0].get('message') or 'damaged'}" if failed else ""
        raise damaged(name, f"{table}{detail}")


def ours(client: Client, scratch: str, name: str, database: str) -> None:
    """BackupError unless backup `name`, attached as `scratch`, is eventpipe's, of a version this code knows:
    the tables every restore needs, the ledger as migrations make it, and each table of an engine the
    migrations make it with. A plain BACKUP of tables of those names got past every check, dropped the
    store, then failed to migrate on every rerun."""
    held = {str(table): str(engine) for table, engine in _rows(client, TABLES, {"d": scratch})}
    if not held:
        raise BackupError(
            f"backup {name} holds no eventpipe tables of the database {database!r}: "
            "a backup restores into a database of the name it was taken from"
        )
    wrong = [f"no {table} table" for table in REQUIRED if table not in held]
    if "schema_migrations" in held:
        columns = {(str(column), str(kind)) for column, kind in _rows(client, LEDGER_COLUMNS, {"d": scratch})}
        wrong += [
            f"schema_migrations has no {column} {kind}" for column, kind in LEDGER_KEYS if (column, kind) not in columns
        ]
    if wrong:
        raise BackupError(f"backup {name} is not an eventpipe backup ({', '.join(wrong)})")
    # First: a newer eventpipe may make a table with an engine this one never did.
    not_newer(client, scratch, name)
    made = engines()
    foreign = [
        f"{table} is {engine}" for table, engine in sorted(held.items()) if engine not in made.get(table, {engine})
    ]
    if foreign:
        raise BackupError(f"backup {name} is not an eventpipe backup ({', '.join(foreign)})")


def not_newer(client: Client, scratch: str, name: str) -> None:
    """BackupError if backup `name`, attached as `scratch`, is of a schema newer than this code knows:
    its restore would drop the store, then fail to migrate what it brought back."""
    with reading_back(name):
        newest = client.query(f"SELECT max(version) FROM {quoted(scratch)}.schema_migrations").result_rows  # noqa: S608
    try:
        known_to_this_version(int(newest[0][0]) if newest else 0, f"backup {name}")
    except ConfigError as exc:
        raise BackupError(f"{exc}; nothing was changed") from exc


@contextmanager
def reading_back(name: str, table: str = "") -> Iterator[None]:
    """ClickHouse's errors while reading backup `name`: a damaged file (DAMAGED_CODES) is the backup's
    fault, a BackupError saying so; anything else a passing one of the server's, classified."""
    try:
        yield
    except Error as exc:
        if getattr(exc, "code", None) not in DAMAGED_CODES:
            with classified():
                raise
        first = str(exc).strip().splitlines()[0][:300]
        raise damaged(name, f"{table}, {first}" if table else first) from exc


def rehearse(client: Client, restore_as: str, scratch: str, name: str) -> None:
    """Run `restore_as`, backup `name`'s RESTORE into the database `scratch`, then drop that database.

    The attached backup that `verify` checks shows the parts whose folders are there and no others (a
    part that cannot be loaded is skipped), so a part's folder gone passed it, while RESTORE, which reads
    the file list in `.backup`, failed after the drop and left `events` empty. The
    rehearsal is that same RESTORE (0.8 to 2.4 s at 10M events), so what fails it fails here."""
    try:
        job.run(client, restore_as)
    except BackupError as exc:
        reason = str(exc).removeprefix("RESTORE failed: ")
        code = re.match(r"Code: (\d+)", reason)
        if code and int(code.group(1)) in DAMAGED_CODES:
            raise damaged(name, f"RESTORE, {reason[:300]}") from exc
        # Room, memory, rights: nothing says the backup is at fault.
        raise BackupError(
            f"the restore of {name} failed when rehearsed in a scratch database ({reason[:300]}), "
            "so nothing was changed: see the reason, then restore again"
        ) from exc
    finally:
        with classified():
            client.command(f"DROP DATABASE IF EXISTS {quoted(scratch)} SYNC")


def damaged(name: str, what: str) -> BackupError:
    """Backup `name` is damaged, `what` says where; a restore adds that it changed nothing."""
    return BackupError(f"backup {name} cannot be read back whole ({what})")


def _rows(client: Client, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    with classified():
        return [tuple(row) for row in client.query(sql, parameters=parameters).result_rows]
