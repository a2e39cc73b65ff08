"""The tables and the projection that find events by user and by id, and the undated events' first times
(migrations 4, 6, 7, 8, 11, 13, 15, 16)."""

from __future__ import annotations

from eventpipe.store.schema.version import DEFINER, Migration, Refill

MIGRATIONS: tuple[Migration, ...] = (
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
# the copy the first copy's time. Sorted by type, then id, with no time, so a
# lookup reads a few granules of each type whatever the time (with 350,000
# types in 700,000 rows, most granules: 20,000 ids in 88 to 96 ms, against 65
# to 75 ms with 10 types; looking up (type, id) pairs instead took 215 to 250
# ms, the pairs costing more to bind than they save). It holds only such
# events (timestamp equal to receive time), a small share of the traffic.
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
UNDATED_ROWS = "SELECT event_type, event_id, timestamp, first_copy FROM events WHERE timestamp = received_at"

MIGRATIONS += (
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

# event_ids cost every insert a fourth part and its merges: at 400 events a
# batch (2,000 events/s) the store spent about 90 ms of CPU per 1,000 events,
# against 30 with `events` alone. A projection sorted by id answers the same
# lookup from inside each part of `events` (6.5 ms at 10M events, against 5 ms
# through event_ids), written with the part and merged with it, so no part or
# merge of its own. A ReplacingMergeTree refuses projections unless told what
# a deduplicating merge or a lightweight delete does to them: a merge rebuilds
# it from the rows it keeps. A lightweight delete leaves it as it was (measured
# on chDB 26.9), so it may name an erased row's key until the part merges;
# lookups read the row itself from events, where the delete masks it. It holds
# every copy until a merge collapses them; copies share their key, which is
# all a lookup reads. The mutation is waited for, so no lookup after the
# migration scans parts without it; a rerun builds it again (1.3 s at 10M).
MIGRATIONS += (
    Migration(
        13,
        "look events up by id through a projection of events instead of event_ids",
        (
            "ALTER TABLE events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild',"
            " lightweight_mutation_projection_mode = 'rebuild'",
            "ALTER TABLE events ADD PROJECTION IF NOT EXISTS by_id"
            " (SELECT event_id, event_type, timestamp ORDER BY event_id)",
            "ALTER TABLE events MATERIALIZE PROJECTION by_id SETTINGS mutations_sync = 2",
            "DROP VIEW IF EXISTS event_ids_feed",
            "DROP TABLE IF EXISTS event_ids",
        ),
    ),
)

# Migration 13's lookup read events twice: the id's keys from by_id, then
# their granules through FINAL. A projection of row offsets (_part_offset;
# sound under ReplacingMergeTree merges from ClickHouse 26.1) selects the
# granules of events that hold an id inside the one read that returns the row
# (projection filtering, 25.6; its per-query switch, 25.11): measured on chDB
# 26.9, 9.2 ms a found id and 7.1 a missing one at 300,000 events against 12.1
# and 8.4, and 9.2 / 5.4 at 10M.
# The new projection is built, and waited for, before the old one goes, so no
# lookup finds neither. Offsets stay true: a merge rebuilds the projection
# from the rows it keeps (deduplicate_merge_projection_mode, migration 13), and
# a lightweight delete masks rows without moving them. A rerun builds it again.
MIGRATIONS += (
    Migration(
        15,
        "look events up by id in one read, through a projection of row offsets",
        (
            # Merges of a ReplacingMergeTree could corrupt or crash on such a
            # projection before 26.1 (ClickHouse #93827, #92925): refuse older servers.
            "SELECT throwIf(toUInt32(splitByChar('.', version())[1]) * 100 + toUInt32(splitByChar('.', version())[2])"
            " < 2601, 'migration 15 needs ClickHouse 26.1 or later')",
            "ALTER TABLE events ADD PROJECTION IF NOT EXISTS id_offsets (SELECT _part_offset ORDER BY event_id)",
            "ALTER TABLE events MATERIALIZE PROJECTION id_offsets SETTINGS mutations_sync = 2",
            "ALTER TABLE events DROP PROJECTION IF EXISTS by_id",
        ),
    ),
)

# A user's page reads, in every part of events_by_user, the granules that
# hold the user: at 100M events a user has about 1,000 rows, a few dozen a
# part, read in granules of 8,192 rows, properties and all. Granules of 1,024
# read an eighth of that (measured on 10M events in 33 to 36 parts: a page
# 58.3 -> 20.5 ms, its extent 56.7 -> 21.5 ms; 512 and 256 gained nothing
# more; merged into 4 parts, 7.3 ms either way). The setting cannot be
# altered, so the table is made anew and filled again from events.
EVENTS_BY_USER_FINE = EVENTS_BY_USER.replace("CREATE TABLE IF NOT EXISTS events_by_user", "CREATE TABLE {table}") + (
    "SETTINGS index_granularity = 1024\n"
)
MIGRATIONS += (
    Migration(
        16,
        "read a user's events in granules of 1,024 rows",
        refills=(
            Refill(
                "events_by_user",
                EVENTS_BY_USER_FINE,
                USER_ROWS,
                view="events_by_user_feed_v3",
                replaces="events_by_user_feed_v2",
                marker="index_granularity = 1024",
            ),
        ),
    ),
)
