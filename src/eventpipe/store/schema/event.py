"""`events` and `dead_letters`, the tables the pipe stores into, as migrations 1, 2, 3 and 5 made them."""

from __future__ import annotations

from eventpipe.store.schema.version import Migration, Rebuild

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

# Reads cost what their window holds only if the table is sorted by time:
# streaming inserts then make parts that cover the last seconds and overlap
# nothing older, and FINAL merges just the granules a query's time range
# selects (measured at 10M events: newest page 1,038 -> 24 ms, last-hour page
# 540 -> 4 ms). Copies of an event keep one sort key (timestamp, type, id),
# so they still collapse under FINAL; the store makes that hold for events
# without their own timestamp too (undated_events, in store.schema.index). The
# partition is a function of the sort key's first column, so copies never sit
# in two partitions.
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
)
