"""Every table written to disk before an insert, a merge or a mutation returns (migrations 22 and 23).

The worker acknowledges a batch once its insert returns. MergeTree wrote the
parts to the page cache only: a host crash, a power cut or a filesystem that
went read-only on an error within the kernel's writeback delay (30 s) left them
empty, and ClickHouse set them aside at the next start as broken, without a
word. An attack lost 9,821 acknowledged events so; a bare table lost 20,000 of
20,000 rows, and none with migration 22's two settings. They fsync each
inserted part's files and its directory, and cost a 400-row insert here about
5 to 10 ms (docs/performance.md).

Merges and mutations write parts too, and an erasure's deletes are mutations.
A host crash right after an erasure returned brought all 1,000 of the user's
events back (ClickHouse set the rewritten parts aside as broken and served the
parts they replaced), while the audit said it was done. Migration 23 syncs
every part a merge or a mutation writes (min_rows_to_fsync_after_merge = 1: a
part of one row or more). Merges run in the background, off the path of an
acknowledgement: the cost is disk writes, measured in docs/performance.md.
Set on the table, not left to a server default chDB and the server may not share.
"""

from __future__ import annotations

from eventpipe.store.schema.version import Migration

# Every MergeTree table at migration 21: the pipe's, the records of operators' work (an erasure's audit and
# keys, the backups' catalog) and the ledger.
TABLES = (
    "events",
    "dead_letters",
    "events_by_user",
    "undated_events",
    "arrivals",
    "worker_marks",
    "dead_letter_outcomes",
    "backups",
    "erasures",
    "restores",
    "erasure_keys",
    "schema_migrations",
)
INSERTS = "fsync_after_insert = 1, fsync_part_directory = 1"
MERGES = "min_rows_to_fsync_after_merge = 1"


def synced(table: str) -> str:
    """The statement that gives `table` (one of TABLES, or a table made later) the settings of both migrations."""
    return f"ALTER TABLE {table} MODIFY SETTING {INSERTS}, {MERGES}"


def _setting(settings: str) -> tuple[str, ...]:
    return tuple(f"ALTER TABLE {table} MODIFY SETTING {settings}" for table in TABLES)


# Each migration's statements as they were released: a store migrated to 22 runs only 23's.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(22, "write each insert to disk before it returns", _setting(INSERTS)),
    Migration(23, "write each merge and mutation to disk before it ends", _setting(MERGES)),
)
