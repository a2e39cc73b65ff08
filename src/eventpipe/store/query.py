"""The read queries: SQL text and bound parameters for what the API serves and tests count.

Every read of a table goes through FINAL, so a redelivered event is one row
before ClickHouse has merged its copies (the one exception, the lookup of
GET /events/{id} through its projection, reads every copy of one id and picks
the one FINAL keeps).
The tables are sorted by time first
(by user, then time, for events_by_user), so a query's time range or user
selects granules through the primary key before FINAL, and FINAL merges only
those: a read costs what its window holds. Copies of an event share the whole
sort key (the writer gives copies of an undated event the first copy's time),
so pruning by key never separates a copy from the one FINAL keeps. WHERE runs
after FINAL (FINAL queries are not moved to PREWHERE), so a filter never picks
out a stale copy; the lookup by id, without FINAL, takes a key's scope only,
a column every copy shares. An API key's scope (EventFilter.event_types) is one of
those filters, added by _event_conditions: every query of events starts from
it, so a key limited to some types sees no other anywhere. Every value is a bound
parameter; no SQL is ever formatted from input. Only the lookup by id sets
settings (LOOKUP_SETTINGS): a ClickHouse user with readonly=2, as the API's
is, can run them all; one with readonly=1 cannot run that lookup. The pages of events and of dead
letters, and how a page is cut in bytes, are in store.page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, TypeVar

from eventpipe.events import PROBE_EVENT_TYPE, Event
from eventpipe.events.condition import Condition
from eventpipe.store.predicate import where_sql

T = TypeVar("T")

# The lookup by id's (event_query): its projection on a table of any size,
# and a read out of the sort key's order, which the projection needs. One
# thread and no lazy materialization: it reads a granule or two, and the
# pipeline of a parallel read, or a second pass for the columns of the one
# row kept, cost more than the read (measured on chDB 26.9 at 100M events:
# 12.3 -> 8.2 ms a found id, 7.9 -> 4.8 ms a missing one).
LOOKUP_SETTINGS = (
    "SETTINGS min_table_rows_to_use_projection_index = 0, optimize_read_in_order = 0,"
    " max_threads = 1, query_plan_optimize_lazy_materialization = 0"
)
EVENT_FIELDS = (
    "event_id, event_type, toUnixTimestamp64Milli(timestamp), toUnixTimestamp64Milli(received_at),"
    " user_id, topic, properties"
)
DEAD_LETTER_FIELDS = "dead_letter_id, toUnixTimestamp64Milli(received_at), topic, reason, detail, payload, payload_size"
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


# A bound parameter travels in one HTTP form field, which a ClickHouse server caps
# (http_max_field_value_size, 128 KiB by default): a list of values longer than
# this goes in several queries. Half the cap, for the quoting around each value.
PARAMETER_BYTES = 64 * 1024


def bound_bytes(value: str) -> int:
    """About what `value` takes in an Array(String) parameter: quoted, a comma (PARAMETER_BYTES leaves room
    for escapes)."""
    return len(value.encode()) + 8


def parameter_chunks(values: Sequence[T], size: Callable[[T], int], limit: int | None = None) -> Iterator[list[T]]:
    """`values` in order, cut into lists whose `size`s add up to at most `limit` (PARAMETER_BYTES unless
    given; at least one value each)."""
    limit = PARAMETER_BYTES if limit is None else limit
    chunk: list[T] = []
    total = 0
    for value in values:
        cost = size(value)
        if chunk and total + cost > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(value)
        total += cost
    if chunk:
        yield chunk


# The time-sorted tables' sort key: the order the feed and the export walk, and what a copy shares.
SORT_KEY = "timestamp, event_type, event_id"


class Key(NamedTuple):
    """An event's place in sort-key order."""

    time_ms: int
    event_type: str
    event_id: str

    @classmethod
    def of(cls, event: Event) -> Key:
        return cls(event.timestamp_ms, event.event_type, event.event_id)

    @classmethod
    def resume(cls, time_ms: int) -> Key:
        """The key just before every event of `time_ms`: no stored event has an empty type, so the rows
        after it are those from `time_ms` on (a feed page out of time at a window's end, store.feed)."""
        return cls(time_ms, "", "")

    @property
    def resumes(self) -> bool:
        return self.event_type == "" and self.event_id == ""


def after_key(conditions: list[str], parameters: dict[str, object], after: Key | None) -> None:
    """Rows after `after` in sort-key order (the export's and the feed's walks). The plain bound on
    timestamp comes first: the primary key uses it to skip granules, which it does not for the tuple
    comparison alone (a page in the middle of 1M events: 133 ms -> 19 ms)."""
    if after is None:
        return
    bound = "fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')"
    conditions.append(f"timestamp >= {bound} AND ({SORT_KEY}) > ({bound}, {{after_type:String}}, {{after_id:String}})")
    parameters |= {"after_ms": after.time_ms, "after_type": after.event_type, "after_id": after.event_id}


def time_range(
    conditions: list[str], parameters: dict[str, object], column: str, since_ms: int | None, until_ms: int | None
) -> None:
    """Rows whose `column` is at or after `since_ms` and before `until_ms` (None: no bound), as a list of
    events and a replay's selection of dead letters both read their since and until."""
    if since_ms is not None:
        conditions.append(f"{column} >= fromUnixTimestamp64Milli({{since_ms:Int64}}, 'UTC')")
        parameters["since_ms"] = since_ms
    if until_ms is not None:
        conditions.append(f"{column} < fromUnixTimestamp64Milli({{until_ms:Int64}}, 'UTC')")
        parameters["until_ms"] = until_ms


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
    # One read of events, without FINAL: the projection id_offsets (row
    # offsets sorted by id, migration 15) selects the id's granules in each
    # part, so the read costs the same at 300,000 events as at 10M. FINAL would
    # not use it and read every granule. Every copy of the id is read instead,
    # and the one FINAL keeps (the highest first_copy) is taken; a row erased
    # by a lightweight delete is masked here as everywhere. The settings are
    # the query's, not left to defaults: by default the projection is used
    # only on tables of 1M rows or more, and reading in the sort key's order
    # (ORDER BY timestamp) skips it. A user with readonly=1 cannot send them;
    # the API's user is readonly=2 (clickhouse/users.d). An id reused under two
    # types is two events; the newest that `where` (its type, a key's scope) allows answers.
    if where._replace(event_type=None, event_types=None) != EventFilter():
        # Without FINAL, a condition on what copies do not share could match a copy FINAL hides.
        raise ValueError("event_query takes a type and a key's scope (event_types) only: every copy shares them")
    conditions, parameters = _event_conditions(where)
    conditions.insert(0, "event_id = {id:String}")
    tail = f"ORDER BY timestamp DESC, event_type, first_copy DESC LIMIT 1 {LOOKUP_SETTINGS}"
    return Query(statement(EVENT_FIELDS, "events", conditions, tail, final=False), parameters | {"id": event_id})


def event_types_query(where: EventFilter, limit: int | None = None, most: int | None = None) -> Query:
    """(type, events) for every type, or for `most` of them at most (whose caller tells a cut answer
    by its length); with `limit`, the `limit` most frequent, each row also carrying the events and the
    number of types over all."""
    conditions, parameters = _event_conditions(where)
    tail = "GROUP BY event_type ORDER BY n DESC, event_type"
    if limit is None:
        if most is not None:
            tail, parameters = tail + " LIMIT {most:UInt32}", {**parameters, "most": most}
        return Query(statement("event_type, count() AS n", _events_table(where), conditions, tail), parameters)
    fields = "event_type, count() AS n, sum(n) OVER () AS total, count() OVER () AS types"
    tail += " LIMIT {limit:UInt32}"
    return Query(statement(fields, _events_table(where), conditions, tail), {**parameters, "limit": limit})


def count_query() -> Query:
    return Query("SELECT count() FROM events FINAL WHERE event_type != {probe:String}", {"probe": PROBE_EVENT_TYPE})


# The time range of every active part of events (its partition minmax index),
# which tells the tally which buckets changed since they were counted.
PARTS_QUERY = Query(
    "SELECT name, toUnixTimestamp(min_time), toUnixTimestamp(max_time) FROM system.parts"
    " WHERE database = currentDatabase() AND table = 'events' AND active",
    {},
)


def bucket_counts_query(width_ms: int, buckets: list[int], most: int) -> Query:
    """Counts by time bucket (epoch ms // width_ms) and event type over the given buckets, `most` rows
    at most: a producer chooses how many types there are.

    The bucket is a monotonic function of the sort key's first column, so the
    primary key selects those buckets' granules, and copies (one sort key)
    are counted once."""
    sql = (
        "SELECT intDiv(toUnixTimestamp64Milli(timestamp), {width:Int64}) AS bucket, event_type, count()"
        " FROM events FINAL WHERE event_type != {probe:String} AND bucket IN {buckets:Array(Int64)}"
        " GROUP BY bucket, event_type LIMIT {most:UInt32}"
    )
    return Query(sql, {"probe": PROBE_EVENT_TYPE, "width": width_ms, "buckets": buckets, "most": most})


def timeseries_query(where: EventFilter, step_ms: int) -> Query:
    # Integer buckets from the epoch: no time zone can shift them, and day
    # buckets start at midnight UTC.
    conditions, parameters = _event_conditions(where)
    parameters["step"] = step_ms
    bucket = "intDiv(toUnixTimestamp64Milli(timestamp), {step:Int64}) * {step:Int64} AS bucket, count()"
    tail = "GROUP BY bucket ORDER BY bucket"
    return Query(statement(bucket, _events_table(where), conditions, tail), parameters)


def quoted(name: str) -> str:
    """An identifier from the server's catalogue (a table, a database), quoted whatever it holds."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def statement(fields: str, table: str, conditions: list[str], tail: str, final: bool = True) -> str:
    # Joins the store's constant fragments only (here and in store.page); values travel as parameters.
    # Without FINAL only where the query picks the kept copy itself (event_query).
    where = "FINAL WHERE" if final else "WHERE"
    return " ".join(("SELECT", fields, "FROM", table, where, " AND ".join(conditions), tail))


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
    time_range(conditions, parameters, "timestamp", where.since_ms, where.until_ms)
    conditions += where_sql(where.where, parameters)
    return conditions, parameters


# The arrival feed (store.feed) admits events by the same filter as every list.
event_conditions = _event_conditions
