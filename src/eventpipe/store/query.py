"""The read queries: SQL text and bound parameters for what the API serves and tests count.

Every read of a table goes through FINAL, so a redelivered event is one row
before ClickHouse has merged its copies. The tables are sorted by time first
(by user, then time, for events_by_user), so a query's time range or user
selects granules through the primary key before FINAL, and FINAL merges only
those: a read costs what its window holds. Copies of an event share the whole
sort key (the writer gives copies of an undated event the first copy's time),
so pruning by key never separates a copy from the one FINAL keeps. WHERE runs
after FINAL (FINAL queries are not moved to PREWHERE), so a filter never picks
out a stale copy. Every value is a bound
parameter; no SQL is ever formatted from input. No query sets a setting, so a
readonly ClickHouse user can run them all.
"""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.events import PROBE_EVENT_TYPE

EVENT_FIELDS = (
    "event_id, event_type, toUnixTimestamp64Milli(timestamp), toUnixTimestamp64Milli(received_at),"
    " user_id, topic, properties"
)
DEAD_LETTER_FIELDS = "dead_letter_id, toUnixTimestamp64Milli(received_at), topic, reason, detail, payload, payload_size"
# Each list is newest first, ties broken by id: the order keyset cursors walk.
EVENT_ORDER = "ORDER BY timestamp DESC, event_id DESC"
DEAD_LETTER_ORDER = "ORDER BY received_at DESC, dead_letter_id DESC"


class Query(NamedTuple):
    """One SQL statement and its bound parameters (exposed so benchmarks run the same SQL)."""

    sql: str
    parameters: dict[str, object]


class EventFilter(NamedTuple):
    event_type: str | None = None
    user_id: str | None = None
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive


class Position(NamedTuple):
    """Where a page ended: the sort key of its last row."""

    time_ms: int
    id: str


def events_query(where: EventFilter, limit: int, after: Position | None = None) -> Query:
    conditions, parameters = _event_conditions(where)
    if after is not None:
        conditions.append(_past("timestamp", "event_id"))
        parameters |= {"after_ms": after.time_ms, "after_id": after.id}
    parameters["limit"] = limit
    tail = EVENT_ORDER + " LIMIT {limit:UInt32}"
    return Query(_statement(EVENT_FIELDS, _events_table(where), conditions, tail), parameters)


def _events_table(where: EventFilter) -> str:
    # One user's events are contiguous in events_by_user; in the time-sorted
    # table they are scattered, and a page of them would scan until found.
    return "events_by_user" if where.user_id is not None else "events"


def event_query(event_id: str) -> Query:
    # The id's sort keys come from event_ids (sorted by id), so events reads
    # the granule of each key, not every granule. An id reused under two types
    # is two events; the newest answers, every time.
    keys = "(timestamp, event_type, event_id) IN (SELECT timestamp, event_type, event_id FROM event_ids"
    conditions = [keys + " WHERE event_id = {id:String})", "event_type != {probe:String}"]
    tail = "ORDER BY timestamp DESC, event_type LIMIT 1"
    return Query(_statement(EVENT_FIELDS, "events", conditions, tail), {"id": event_id, "probe": PROBE_EVENT_TYPE})


def event_types_query(where: EventFilter) -> Query:
    conditions, parameters = _event_conditions(where)
    tail = "GROUP BY event_type ORDER BY n DESC, event_type"
    return Query(_statement("event_type, count() AS n", _events_table(where), conditions, tail), parameters)


def count_query() -> Query:
    return Query("SELECT count() FROM events FINAL WHERE event_type != {probe:String}", {"probe": PROBE_EVENT_TYPE})


# The time range of every active part of events (its partition minmax index),
# which tells the tally which buckets changed since they were counted.
PARTS_QUERY = Query(
    "SELECT name, toUnixTimestamp(min_time), toUnixTimestamp(max_time) FROM system.parts"
    " WHERE database = currentDatabase() AND table = 'events' AND active",
    {},
)


def bucket_counts_query(width_ms: int, buckets: list[int]) -> Query:
    """Counts by time bucket (epoch ms // width_ms) and event type over the given buckets.

    The bucket is a monotonic function of the sort key's first column, so the
    primary key selects those buckets' granules, and copies (one sort key)
    are counted once."""
    sql = (
        "SELECT intDiv(toUnixTimestamp64Milli(timestamp), {width:Int64}) AS bucket, event_type, count()"
        " FROM events FINAL WHERE event_type != {probe:String} AND bucket IN {buckets:Array(Int64)}"
        " GROUP BY bucket, event_type"
    )
    return Query(sql, {"probe": PROBE_EVENT_TYPE, "width": width_ms, "buckets": buckets})


def timeseries_query(where: EventFilter, step_ms: int) -> Query:
    # Integer buckets from the epoch: no time zone can shift them, and day
    # buckets start at midnight UTC.
    conditions, parameters = _event_conditions(where)
    parameters["step"] = step_ms
    bucket = "intDiv(toUnixTimestamp64Milli(timestamp), {step:Int64}) * {step:Int64} AS bucket, count()"
    tail = "GROUP BY bucket ORDER BY bucket"
    return Query(_statement(bucket, _events_table(where), conditions, tail), parameters)


def dead_letters_query(reason: str | None, limit: int, after: Position | None = None) -> Query:
    conditions: list[str] = ["1"]
    parameters: dict[str, object] = {}
    if reason is not None:
        conditions.append("reason = {reason:String}")
        parameters["reason"] = reason
    if after is not None:
        conditions.append(_past("received_at", "dead_letter_id"))
        parameters |= {"after_ms": after.time_ms, "after_id": after.id}
    parameters["limit"] = limit
    tail = DEAD_LETTER_ORDER + " LIMIT {limit:UInt32}"
    return Query(_statement(DEAD_LETTER_FIELDS, "dead_letters", conditions, tail), parameters)


def _past(time_column: str, id_column: str) -> str:
    """Rows after the cursor in newest-first order. Spelled out rather than as a
    tuple comparison so the time column's minmax index can skip granules."""
    bound = "fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')"
    return f"{time_column} <= {bound} AND ({time_column} < {bound} OR {id_column} < {{after_id:String}})"


def _statement(fields: str, table: str, conditions: list[str], tail: str) -> str:
    # Joins this module's constant fragments only; values travel as parameters.
    return " ".join(("SELECT", fields, "FROM", table, "FINAL WHERE", " AND ".join(conditions), tail))


def _event_conditions(where: EventFilter) -> tuple[list[str], dict[str, object]]:
    # eventpipe's own probe events are plumbing, not data: never served.
    conditions = ["event_type != {probe:String}"]
    parameters: dict[str, object] = {"probe": PROBE_EVENT_TYPE}
    if where.event_type is not None:
        conditions.append("event_type = {event_type:String}")
        parameters["event_type"] = where.event_type
    if where.user_id is not None:
        conditions.append("user_id = {user_id:String}")
        parameters["user_id"] = where.user_id
    if where.since_ms is not None:
        conditions.append("timestamp >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        parameters["since_ms"] = where.since_ms
    if where.until_ms is not None:
        conditions.append("timestamp < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')")
        parameters["until_ms"] = where.until_ms
    return conditions, parameters
