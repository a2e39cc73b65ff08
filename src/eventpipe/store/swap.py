"""The migration steps that make a table anew and swap it in for the old one (store.schema.version's
Rebuild and Refill), so that a rerun finishes whatever a crashed or a second migrator left."""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from eventpipe.errors import HaltStorageError
from eventpipe.store.disk import room_for_schema
from eventpipe.store.retention import RETAINED, retain
from eventpipe.store.schema.durability import synced
from eventpipe.store.schema.version import DEFINER, REBUILT, REFILLED, Rebuild, Refill
from eventpipe.store.system import catalog, names

log = logging.getLogger(__name__)


def rebuild_table(client: Client, rebuild: Rebuild) -> None:
    # Copy, swap, copy again, drop. The second copy takes rows a worker still
    # running the old version wrote to the old table during the first; copies
    # of a row collapse, so copying twice is harmless. Stop workers for this
    # migration anyway: an insert in flight across the swap could be missed.
    table, scratch = rebuild.table, rebuild.table + REBUILT
    final = " FINAL" if rebuild.collapse else ""
    if not rebuilt(client, rebuild):
        client.command(f"DROP TABLE IF EXISTS {scratch}")  # a half-filled copy from a crashed run
        client.command(rebuild.create.format(table=scratch))
        client.command(synced(scratch))  # definitions older than migrations 22 and 23 lack their settings
        made = catalog(client, scratch, "uuid")
        client.command(f"INSERT INTO {scratch} SELECT * FROM {table}{final}")  # noqa: S608 - names are constants
        # As in refill_table, migrators must take turns. Without these checks a second one dropped the first's
        # copy and made its own, both swapped, the second swap put the old table back, and the ledger said
        # done over the old definition: now whichever sees another's hand stops, and
        # a rerun finishes from whatever state the two left.
        if catalog(client, scratch, "uuid") != made or rebuilt(client, rebuild):
            raise HaltStorageError(f"{scratch} was made again during the copy: is another migrator running?")
        room_for_schema(client)  # the copy may have filled the disk: no definition is written onto a full one
        client.command(f"EXCHANGE TABLES {table} AND {scratch}")
        if catalog(client, table, "uuid") != made:
            raise HaltStorageError(f"{table} was swapped by another migrator too: run migrate again, alone")
    # From here on `scratch`, if it is there, is the old table.
    if scratch in names("system.tables", "name = {t:String}", scratch, client):
        client.command(f"INSERT INTO {table} SELECT * FROM {scratch}{final}")  # noqa: S608 - names are constants
        client.command(f"DROP TABLE {scratch}")
        log.info("rebuilt table %s", table)


def refill_table(client: Client, refill: Refill, retention_days: int) -> None:
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
    if refill.marker not in catalog(client, table, "engine_full"):
        # Not swapped yet: what a crashed run left is started afresh.
        client.command(f"DROP VIEW IF EXISTS {feed}")
        client.command(f"DROP TABLE IF EXISTS {scratch} SYNC")
        block = int(str(client.command(LAST_BLOCK, parameters={"t": refill.source}) or 0))
        note = f" COMMENT 'filled from {refill.source} after block {block}'"
        client.command(refill.create.format(table=scratch) + note)
        client.command(synced(scratch))
        retain(client, scratch, RETAINED[table], retention_days)  # empty: no rewrite, unlike after the copy
        made = catalog(client, scratch, "uuid")
        client.command(f"CREATE MATERIALIZED VIEW {feed} TO {scratch} {DEFINER} AS {refill.rows}")
        client.command(f"INSERT INTO {scratch} {refill.rows}")
        if catalog(client, scratch, "uuid") != made:
            # Migrators of this step must take turns (compose's one-shot `migrate`
            # and `eventpipe up` run one): a second drops the first's copy and
            # begins its own. This stops the worst of it, a copy begun later swapped in.
            raise HaltStorageError(f"{scratch} was made again during the copy: is another migrator running?")
        room_for_schema(client)  # as in rebuild_table, after the copy
        client.command(f"EXCHANGE TABLES {table} AND {scratch}")
    # From here on `scratch`, if it is there, is the old table, and a rerun
    # only finishes the views: the copy (minutes at 100M events) is made once.
    room_for_schema(client)
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
    last = catalog(client, table, "comment").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def rebuilt(client: Client, rebuild: Rebuild) -> bool:
    if rebuild.sorting_key:
        return catalog(client, rebuild.table, "sorting_key") == rebuild.marker
    return rebuild.marker in names("system.columns", "table = {t:String}", rebuild.table, client)
