"""What operators' actions leave behind: backups, replay outcomes, erasures, restores (migrations 10, 12, 17-21, 24)."""

from __future__ import annotations

from eventpipe.store.schema.version import Migration

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
    taken_by String,
    ordinal_before Nullable(UInt64)
)
ENGINE = ReplacingMergeTree
ORDER BY name
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(10, "record backups", (BACKUP_CATALOG,)),)

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
# keyed hash (store.audit). Append only: no TTL, no admin grant to delete.
ERASURES = """
CREATE TABLE IF NOT EXISTS erasures
(
    erasure_id String,
    erased_at DateTime64(3, 'UTC'),
    key_name String,
    user_hash String,
    events UInt64,
    dead_letters UInt64,
    complete UInt8 DEFAULT 1,
    ordinal UInt64 DEFAULT 0
)
ENGINE = MergeTree
ORDER BY (erased_at, erasure_id)
"""

# Numbered 12: 9 is the arrival feed's, 10 is above, 11 is the user index's (store.schema.index).
MIGRATIONS += (Migration(12, "record replay outcomes and erasures", (DEAD_LETTER_OUTCOMES, ERASURES)),)

# Rows of each restore (store.backup), one written before it drops the tables
# and one once it has rebuilt them (finished), each with a random id: the store's
# generation is the newest finished row's id (0 before any), so a token issued
# before or during a restore is of an older one. The arrival feed's tokens
# carry it, so one from before a restore is refused for good (422, start
# again), not only while the rebuilt `arrivals` numbers below it: past that, it
# would walk the new numbering from the old place and skip events (found by an
# attack). Random, not a count: this table is in no backup, and a count starts
# again on a new server, where an old token's count could come round again.
# Which restore is the newest, for the feed's generation and migrate's check: the latest, then the higher id.
NEWEST = "(restored_at, restore_id)"
RESTORES = """
CREATE TABLE IF NOT EXISTS restores
(
    restored_at DateTime64(3, 'UTC'),
    backup String,
    taken_by String,
    restore_id UInt64,
    finished UInt8 DEFAULT 1,
    ordinal UInt64 DEFAULT 0
)
ENGINE = MergeTree
ORDER BY restored_at
"""

# Columns added to the tables a restore keeps (store.migration.KEPT), by migration.
# A restore runs them all again before it writes to those tables: it brings back
# the backup's ledger, which may list a migration this store's copy of a kept
# table never had (a backup from an upgraded host restored onto an older store),
# and the ledger would then never let it run here.
RESTORE_ID = "ALTER TABLE restores ADD COLUMN IF NOT EXISTS restore_id UInt64"
# Whether the row is a restore's last (written once it rebuilt the tables): a newest row
# without it is a restore that stopped after its drop, and nothing may start on that store.
FINISHED = "ALTER TABLE restores ADD COLUMN IF NOT EXISTS finished UInt8 DEFAULT 1"
# Whether the erasure was whole (store.erasure.Erased.complete): the audit is
# what an operator shows, so one that may have missed a held batch says so
# there, not only in its answer and the log. Rows from before it were counted whole.
COMPLETE = "ALTER TABLE erasures ADD COLUMN IF NOT EXISTS complete UInt8 DEFAULT 1"
# Where each erasure and each finished restore falls in the order of what the audit records, and each
# backup in that order (store.lineage): an erasure's or a restore's `ordinal` is how many erasures and
# finished restores were recorded before it, and one; a backup's `ordinal_before` is how many were
# recorded when it began. Counted, not timed: which erasures came after a backup was decided by
# comparing clocks, and an API whose clock was an hour ahead while it took a backup (then set right)
# named it an hour late, so a restore of it left out the erasure made just after, and the user came back
# unsaid (found by an attack with a clock shim; a backward NTP step did the same). Nothing deletes from
# either table (no grant, no TTL), so a count only grows. 0, and NULL for a backup: recorded before
# migration 24, ordered by time as before (store.lineage.TIMED).
ERASURE_ORDINAL = "ALTER TABLE erasures ADD COLUMN IF NOT EXISTS ordinal UInt64 DEFAULT 0"
RESTORE_ORDINAL = "ALTER TABLE restores ADD COLUMN IF NOT EXISTS ordinal UInt64 DEFAULT 0"
BACKUP_ORDINAL = "ALTER TABLE backups ADD COLUMN IF NOT EXISTS ordinal_before Nullable(UInt64)"
KEPT_COLUMNS = {
    ("restores", "restore_id"): RESTORE_ID,
    ("restores", "finished"): FINISHED,
    ("erasures", "complete"): COMPLETE,
    ("erasures", "ordinal"): ERASURE_ORDINAL,
    ("restores", "ordinal"): RESTORE_ORDINAL,
    ("backups", "ordinal_before"): BACKUP_ORDINAL,
}

MIGRATIONS += (
    Migration(17, "record restores", (RESTORES,)),
    # Migration 17 first made the table without its id (a store of that day).
    Migration(18, "give each restore an id", (RESTORE_ID,)),
    Migration(19, "mark finished restores", (FINISHED,)),
    Migration(20, "say in the erasure audit whether each erasure was complete", (COMPLETE,)),
)

# What an erasure's deletes read the user id and its dead-letter patterns from, by a random token, so that
# ClickHouse's mutation log holds the token and not the id (store.concealment). One partition per erasure: its
# rows go by DROP PARTITION, no mutation. Never in a backup (migration.KEPT): a restore would bring back
# ids erased since.
ERASURE_KEYS = """
CREATE TABLE IF NOT EXISTS erasure_keys
(
    token String,
    name String,
    text String,
    texts Array(String),
    number Float64,
    cut_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY token
ORDER BY name
"""

MIGRATIONS += (Migration(21, "keep erased ids out of the mutation log", (ERASURE_KEYS,)),)
MIGRATIONS += (
    Migration(
        24,
        "order backups, restores and erasures by what the audit had recorded",
        (ERASURE_ORDINAL, RESTORE_ORDINAL, BACKUP_ORDINAL),
    ),
)
