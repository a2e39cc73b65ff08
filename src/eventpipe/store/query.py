"""The read queries: SQL text and bound parameters for what the API serves and tests count.

Every read of a table goes through FINAL, so a redelivered event is one row
before ClickHouse has merged its copies. The tables are sorted by time first
(by user, then time, for events_by_user), so a query's time range or user
selects granules through the primary key before FINAL, and FINAL merges only
those: a read costs what its window holds. Copies of an event share the whole
sort key (the writer gives copies of an undated event the first copy's time),
so pruning by key never separates a copy from the one FINAL keeps. WHERE runs
after FINAL (FINAL queries are not moved to PREWHERE), so a filter never picks
out a stale copy. An API key's scope (EventFilter.event_types) is one of
those filters, added by _event_conditions: every query of events starts from
it, so a key limited to some types sees no other anywhere. Every value is a bound
parameter; no SQL is ever formatted from input. No query sets a setting, so a
readonly ClickHouse user can run them all.

A page is bounded in bytes before any of it is read: its extent query sums an
upper bound of each row's JSON (from string lengths alone, which ClickHouse
reads without the strings) over the page's order and keeps the rows within
PAGE_BYTES; only then does the page query read those rows whole.
"""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.events import PROBE_EVENT_TYPE
from eventpipe.events.condition import Condition
from eventpipe.store.predicate import where_sql
from eventpipe.store.status import CONDITIONS as STATUS_CONDITIONS

EVENT_FIELDS = (
    "event_id, event_type, toUnixTimestamp64Milli(timestamp), toUnixTimestamp64Milli(received_at),"
    " user_id, topic, properties"
)
DEAD_LETTER_FIELDS = "dead_letter_id, toUnixTimestamp64Milli(received_at), topic, reason, detail, payload, payload_size"
# Each list is newest first, ties broken by id: the order keyset cursors walk.
EVENT_ORDER = "ORDER BY timestamp DESC, event_id DESC"
DEAD_LETTER_ORDER = "ORDER BY received_at DESC, dead_letter_id DESC"
# The most a page's items may take as the API's JSON: 1000 events of 64 KiB
# would make a 64 MiB answer, 1000 dead letters of control characters 384 MiB.
PAGE_BYTES = 8 * 1024 * 1024
# Upper bounds of one row's JSON as the API writes it (api.model). A string
# byte takes at most 6 as JSON (a control character is \u00XX) and 4/3 as
# base64; properties are spliced in as stored; 256 covers the keys, the two
# timestamps, payload_size and the comma between items. Big strings are
# measured by their .size subcolumn: under FINAL, length() reads the whole
# string (measured +306 MiB for three pages over 64 KiB dead letters).
EVENT_BYTES = (
    "properties.size + 6 * (length(event_id) + length(event_type) + length(topic)"
    " + length(assumeNotNull(user_id))) + 256"
)
DEAD_LETTER_BYTES = "6 * (payload.size + detail.size + length(dead_letter_id) + length(topic) + length(reason)) + 256"


class Query(NamedTuple):
    """One SQL statement and its bound parameters (exposed so benchmarks run the same SQL)."""

    sql: str
    parameters: dict[str, object]


class EventFilter(NamedTuple):
    event_type: str | None = None
    user_id: str | None = None
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    # An API key's scope (api.grant): only these types, in every query built
    # from this filter; None is every type. Set by the key, never by a client.
    event_types: tuple[str, ...] | None = None
    where: tuple[Condition, ...] = ()  # AND-ed property filters (events.condition, SQL in store.predicate)


class Position(NamedTuple):
    """Where a page ended: the sort key of its last row."""

    time_ms: int
    id: str


class Extent(NamedTuple):
    """What an extent query found: of the first `candidates` rows after the
    cursor (at most the limit), the first `kept` fit in the byte cap, and
    `last` is where they end (None when none are kept)."""

    candidates: int
    kept: int
    last: Position | None


def events_extent_query(where: EventFilter, limit: int, after: Position | None, max_bytes: int) -> Query:
    conditions, parameters = _event_conditions(where)
    _after(conditions, parameters, after, "timestamp", "event_id")
    key = ("timestamp", "event_id", EVENT_ORDER)
    return _extent(key, EVENT_BYTES, _events_table(where), conditions, parameters, limit, max_bytes)


def events_query(
    where: EventFilter, limit: int, after: Position | None = None, through: Position | None = None
) -> Query:
    """The first `limit` events after `after`, up to and including `through`."""
    conditions, parameters = _event_conditions(where)
    key = ("timestamp", "event_id", EVENT_ORDER)
    return _page(EVENT_FIELDS, _events_table(where), key, conditions, parameters, limit, after, through)


def _events_table(where: EventFilter) -> str:
    # One user's events are contiguous in events_by_user; in the time-sorted
    # table they are scattered, and a page of them would scan until found.
    return "events_by_user" if one_user(where) else "events"


def one_user(where: EventFilter) -> bool:
    """True when `where` selects one user's events (user_id, or where=user_id=...), whose rows events_by_user holds."""
    named = any(c.field.name == "user_id" and c.operator == "=" for c in where.where)
    return where.user_id is not None or named


def event_source(where: EventFilter) -> tuple[str, list[str], dict[str, object]]:
    """The table a read of `where` takes, and its conditions and parameters, for queries built elsewhere."""
    conditions, parameters = _event_conditions(where)
    return _events_table(where), conditions, parameters


def event_query(event_id: str, where: EventFilter = EventFilter()) -> Query:  # noqa: B008 - an immutable tuple
    # The id's sort keys come from event_ids (sorted by id), so events reads
    # the granule of each key, not every granule. An id reused under two types
    # is two events; the newest that `where` (a key's scope) allows answers.
    conditions, parameters = _event_conditions(where)
    keys = "(timestamp, event_type, event_id) IN (SELECT timestamp, event_type, event_id FROM event_ids"
    conditions.insert(0, keys + " WHERE event_id = {id:String})")
    tail = "ORDER BY timestamp DESC, event_type LIMIT 1"
    return Query(_statement(EVENT_FIELDS, "events", conditions, tail), parameters | {"id": event_id})


def event_types_query(where: EventFilter, limit: int | None = None) -> Query:
    """(type, events) for every type; with `limit`, the `limit` most frequent, each row also
    carrying the events and the number of types over all."""
    conditions, parameters = _event_conditions(where)
    tail = "GROUP BY event_type ORDER BY n DESC, event_type"
    if limit is None:
        return Query(_statement("event_type, count() AS n", _events_table(where), conditions, tail), parameters)
    fields = "event_type, count() AS n, sum(n) OVER () AS total, count() OVER () AS types"
    tail += " LIMIT {limit:UInt32}"
    return Query(_statement(fields, _events_table(where), conditions, tail), {**parameters, "limit": limit})


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


def dead_letters_extent_query(
    reason: str | None, limit: int, after: Position | None, max_bytes: int, status: str | None = None
) -> Query:
    conditions, parameters = _dead_letter_conditions(reason, status)
    _after(conditions, parameters, after, "received_at", "dead_letter_id")
    key = ("received_at", "dead_letter_id", DEAD_LETTER_ORDER)
    return _extent(key, DEAD_LETTER_BYTES, "dead_letters", conditions, parameters, limit, max_bytes)


def dead_letters_query(
    reason: str | None,
    limit: int,
    after: Position | None = None,
    through: Position | None = None,
    status: str | None = None,
) -> Query:
    """The first `limit` dead letters after `after`, up to and including `through`."""
    conditions, parameters = _dead_letter_conditions(reason, status)
    key = ("received_at", "dead_letter_id", DEAD_LETTER_ORDER)
    return _page(DEAD_LETTER_FIELDS, "dead_letters", key, conditions, parameters, limit, after, through)


def _page(
    fields: str,
    table: str,
    key: tuple[str, str, str],
    conditions: list[str],
    parameters: dict[str, object],
    limit: int,
    after: Position | None,
    through: Position | None,
) -> Query:
    """A page of `table` in the order `key` names (time column, id column, ORDER BY), between two positions."""
    time_column, id_column, order = key
    _after(conditions, parameters, after, time_column, id_column)
    _through(conditions, parameters, through, time_column, id_column)
    parameters["limit"] = limit
    return Query(_statement(fields, table, conditions, order + " LIMIT {limit:UInt32}"), parameters)


def _dead_letter_conditions(reason: str | None, status: str | None = None) -> tuple[list[str], dict[str, object]]:
    conditions, parameters = ["1"], dict[str, object]()
    if reason is not None:
        conditions, parameters = ["reason = {reason:String}"], {"reason": reason}
    if status is not None:
        conditions.append(STATUS_CONDITIONS[status])
    return conditions, parameters


def _extent(
    key: tuple[str, str, str],
    row_bytes: str,
    table: str,
    conditions: list[str],
    parameters: dict[str, object],
    limit: int,
    max_bytes: int,
) -> Query:
    """One row: how many of the first `limit` rows there are, how many fit in
    `max_bytes` (at least one, so a page always moves on), and where those end.

    Reads the sort key and string lengths only, never a payload: the running
    sum of row bounds in page order stops the page before it is fetched."""
    time_column, id_column, order = key
    candidates = _statement(", ".join((time_column, id_column, row_bytes + " AS size")), table, conditions, order)
    fields = ", ".join(
        (
            f"toUnixTimestamp64Milli({time_column}) AS time_ms",
            f"{id_column} AS id",
            "size",
            f"sum(size) OVER ({order} ROWS UNBOUNDED PRECEDING) AS running",
        )
    )
    # Sizes are positive, so running = size on the first row only.
    kept = "running <= {max_bytes:UInt64} OR running = size"
    outer = f"count(), countIf({kept}), argMinIf((time_ms, id), (time_ms, id), {kept})"
    running = " ".join(("SELECT", fields, "FROM (", candidates, "LIMIT {limit:UInt32} )"))
    return Query(
        " ".join(("SELECT", outer, "FROM (", running, ")")), parameters | {"limit": limit, "max_bytes": max_bytes}
    )


def _after(
    conditions: list[str], parameters: dict[str, object], after: Position | None, time_column: str, id_column: str
) -> None:
    """Rows after the cursor in newest-first order. Spelled out rather than as a
    tuple comparison so the time column's minmax index can skip granules."""
    if after is None:
        return
    bound = "fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')"
    conditions.append(f"{time_column} <= {bound} AND ({time_column} < {bound} OR {id_column} < {{after_id:String}})")
    parameters |= {"after_ms": after.time_ms, "after_id": after.id}


def _through(
    conditions: list[str], parameters: dict[str, object], through: Position | None, time_column: str, id_column: str
) -> None:
    """Rows up to and including `through` in newest-first order (the end of a page's extent)."""
    if through is None:
        return
    bound = "fromUnixTimestamp64Milli({through_ms:Int64}, 'UTC')"
    conditions.append(f"{time_column} >= {bound} AND ({time_column} > {bound} OR {id_column} >= {{through_id:String}})")
    parameters |= {"through_ms": through.time_ms, "through_id": through.id}


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
    if where.event_types is not None:
        conditions.append("event_type IN {event_types:Array(String)}")
        parameters["event_types"] = list(where.event_types)
    if where.user_id is not None:
        conditions.append("user_id = {user_id:String}")
        parameters["user_id"] = where.user_id
    if where.since_ms is not None:
        conditions.append("timestamp >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        parameters["since_ms"] = where.since_ms
    if where.until_ms is not None:
        conditions.append("timestamp < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')")
        parameters["until_ms"] = where.until_ms
    conditions += where_sql(where.where, parameters)
    return conditions, parameters


# The arrival feed (store.feed) admits events by the same filter as every list.
event_conditions = _event_conditions
