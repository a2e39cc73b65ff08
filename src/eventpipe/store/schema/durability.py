"""Every table written to disk before an insert returns (migration 22).

The worker acknowledges a batch once its insert returns. MergeTree wrote the
parts to the page cache only: a host crash, a power cut or a filesystem that
went read-only on an error within the kernel's writeback delay (30 s) left them
empty, and ClickHouse set them aside at the next start as broken, without a
word. An attack lost 9,821 acknowledged events so; a bare table lost 20,000 of
20,000 rows, and none with these two settings. They fsync each inserted part's
files and its directory, and cost a 400-row insert here about 5 to 10 ms
(docs/performance.md). Merges are not synced: the parts they replace stay on
disk 8 minutes (old_parts_lifetime), long past the writeback, and come back
in place of a merged part found broken. Nor are mutations, an erasure's
deletes among them: one whose rewritten parts a crash caught in the page
cache comes back undone, its rows with it (docs/architecture.md, "Guarantees").
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
SYNCED = "fsync_after_insert = 1, fsync_part_directory = 1"


def synced(table: str) -> str:
    """The statement that gives `table` (one of TABLES, or a table made later) the settings."""
    return f"ALTER TABLE {table} MODIFY SETTING {SYNCED}"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(22, "write each insert to disk before it returns", tuple(synced(table) for table in TABLES)),
)
