"""Small parts of the copies written as one file each (migration 25).

A live insert writes a part to `events` (with its `id_offsets` projection),
one to `events_by_user` and one to `arrivals`: 47 files per 400-row batch, each
created, written and most synced (migration 22). On this machine's disk the
creations and syncs, not the bytes (about 70 KB a batch), were much of what a
live insert paid for the read layout's two copies (docs/performance.md).
ClickHouse's packed part storage writes a part's files into one `data.packed`,
synced once: the copies' parts are then 2 files instead of 24, and a 400-row
insert took 21.8 ms instead of 24.2 (p50, interleaved). Parts of `PACKED_ROWS`
rows or more (a drained backlog's full batches, `bench fill`'s, a restore's,
every merge past that size) are written a file each, as before.

Set on every table but `events` (below), so a table made later (a rebuild's
copy, a record table a restore found missing) gets it as it gets migrations 22
and 23's. It is a setting of the table, not of the engine: ClickHouse servers
from before packed storage was open-sourced (#108118, July 2026; chDB 26.9 has
it) declare it as a ClickHouse Cloud setting, take it and write a file each,
so the compose server's schema is the same and only its files differ.
"""

from __future__ import annotations

from eventpipe.store.schema import durability
from eventpipe.store.schema.version import Migration

# Not `events`: ClickHouse (chDB 26.9) syncs a packed part's data.packed but not its projection's, and after a
# disk failure right after 2,000 events' inserts returned, every `id_offsets.proj/data.packed` was empty and
# every part of `events` was set aside as broken at start: all 2,000 lost (tests/fault/test_power.py). A part
# stored a file each keeps its data when its projection is lost.
TABLES = tuple(table for table in durability.TABLES if table != "events")

# A live batch at up to 50,000 events/s in 200 ms batches; a backlog's full batches (20,000) stay a file each.
PACKED_ROWS = 10_000
SETTING = f"min_rows_for_full_part_storage = {PACKED_ROWS}"


def packed(table: str) -> str:
    """The statement that gives `table` (one of TABLES, or a table made later without a projection) migration
    25's setting."""
    return f"ALTER TABLE {table} MODIFY SETTING {SETTING}"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(25, "write each small part as one file", tuple(packed(table) for table in TABLES)),
)
