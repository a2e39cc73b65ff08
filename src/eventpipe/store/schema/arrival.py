"""`arrivals` and `worker_marks`, the tables the arrival feed reads (migration 9)."""

from __future__ import annotations

from eventpipe.events import PROBE_EVENT_TYPE
from eventpipe.store.schema.version import DEFINER, Migration

# The arrival feed (GET /feed) needs an order that a client can follow without
# missing an event committed late or twice by a redelivery. ClickHouse gives
# every part a block number, taken and committed under one lock in a
# non-replicated MergeTree, so numbers follow commit order: once a part is
# visible, every part with a lower number is too. `arrivals` keeps every copy
# of every stored event (a plain MergeTree collapses nothing), and with
# enable_block_number_column each row keeps its part's number through merges
# (set here, not left to a default the server might not share). An event's
# place in the feed is the lowest number among its copies, which never changes
# once it is visible. Sorted like `events`, so copies of an event sit together
# and a page reads a key range. Fed in the same insert; copies made by a rerun
# of the copy below are copies like any other (store.feed).
ARRIVALS = """
CREATE TABLE IF NOT EXISTS arrivals
(
    event_id String,
    event_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id Nullable(String),
    topic LowCardinality(String),
    properties String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, event_type, event_id)
SETTINGS enable_block_number_column = 1
"""
ARRIVAL_ROWS = "SELECT event_id, event_type, timestamp, received_at, user_id, topic, properties FROM events"

# What each worker has committed: a mark says that every message the worker
# received before `complete_before` was committed before the mark was written
# (ingest.mark). GET /feed reads the newest mark of every worker for its
# complete_until; `retired` is a worker that stopped with nothing held. Keyed
# by worker, newest mark kept.
MARK_WORKER, MARK_COMPLETE_BEFORE, MARK_RETIRED = "worker", "complete_before", "retired"
WORKER_MARKS = """
CREATE TABLE IF NOT EXISTS worker_marks
(
    worker String,
    complete_before Int64,
    retired UInt8,
    written Int64
)
ENGINE = ReplacingMergeTree(written)
ORDER BY worker
"""
# Until migration 14, marks were probe events and this view copied them out of `events`.
MARK_ROWS = (
    f"SELECT JSONExtractString(properties, '{MARK_WORKER}') AS worker,"  # noqa: S608 - constants
    f" JSONExtractInt(properties, '{MARK_COMPLETE_BEFORE}') AS complete_before,"
    f" toUInt8(JSONExtractBool(properties, '{MARK_RETIRED}')) AS retired,"
    " toUnixTimestamp64Milli(received_at) AS written FROM events"
    f" WHERE event_type = '{PROBE_EVENT_TYPE}' AND JSONHas(properties, '{MARK_WORKER}')"
    f" AND (JSONHas(properties, '{MARK_COMPLETE_BEFORE}') OR JSONHas(properties, '{MARK_RETIRED}'))"
)

MIGRATIONS: tuple[Migration, ...] = (
    # Numbered 9 by the arrival feed; views first, then the copy of what is
    # stored, so a row inserted in between is in arrivals twice, which the
    # feed reads as two copies of one event. A rerun after a crash copies again,
    # harmlessly for the same reason.
    Migration(
        9,
        "keep every stored copy in arrival order for the feed",
        (
            ARRIVALS,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS arrivals_feed TO arrivals {DEFINER} AS {ARRIVAL_ROWS}",
            WORKER_MARKS,
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS worker_marks_feed TO worker_marks {DEFINER} AS {MARK_ROWS}",
            f"INSERT INTO arrivals {ARRIVAL_ROWS}",
        ),
    ),
)

# A view runs on every insert into `events`, and the marks' view wrote about
# one row a second yet cost every batch its own pipeline: about a tenth of
# the store's CPU at 2,000 events/s (docs/performance.md). The worker now
# writes its marks into worker_marks itself, after the batches they speak
# for (ingest.worker), and no longer into `events`. That also closes a hole:
# the view took any probe event carrying a worker's name for a mark, so a
# producer could publish one and hold every feed's complete_until back, or
# move it past events not yet committed. Marks already in `events` stay
# there, as hidden probe events.
MIGRATIONS += (Migration(14, "workers write their marks themselves", ("DROP VIEW IF EXISTS worker_marks_feed",)),)
