"""Read queries: what the API serves and what health checks and tests count.

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

from clickhouse_connect.driver.client import Client

from eventpipe.events import PROBE_EVENT_TYPE, Event
from eventpipe.store.client import ping
from eventpipe.store.failure import classified
from eventpipe.store.tally import Counts, Part, Tally, added, coverable, day_signatures

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


class StoredDeadLetter(NamedTuple):
    dead_letter_id: str
    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int


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
# which tells the tally which days changed since they were counted.
PARTS_QUERY = Query(
    "SELECT name, toUnixTimestamp(min_time), toUnixTimestamp(max_time) FROM system.parts"
    " WHERE database = currentDatabase() AND table = 'events' AND active",
    {},
)


def day_counts_query(days: list[int]) -> Query:
    """Counts by UTC day and event type over the given days (days since the epoch).

    The day is a monotonic function of the sort key's first column, so the
    primary key selects those days' granules, and copies (one sort key) are
    counted once."""
    sql = (
        "SELECT toInt32(toDate32(timestamp)) AS day, event_type, count() FROM events FINAL"
        " WHERE event_type != {probe:String} AND day IN {days:Array(Int32)} GROUP BY day, event_type"
    )
    return Query(sql, {"probe": PROBE_EVENT_TYPE, "days": days})


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


class Reader:
    def __init__(self, client: Client) -> None:
        self._client = client
        # All-time counts by day, kept across requests: one Reader per process.
        self._tally = Tally()

    def ping(self) -> bool:
        """True when ClickHouse answers a query."""
        return ping(self._client)

    def events(self, where: EventFilter, limit: int, after: Position | None = None) -> list[Event]:
        return [_event(row) for row in self.run(events_query(where, limit, after))]

    def event(self, event_id: str) -> Event | None:
        rows = self.run(event_query(event_id))
        return _event(rows[0]) if rows else None

    def event_types(self, where: EventFilter) -> list[tuple[str, int]]:
        """Events per type, most first, ties by type (as event_types_query orders them)."""
        if where == EventFilter():
            return sorted(self._all_time().items(), key=lambda item: (-item[1], item[0]))
        return [(str(kind), int(str(n))) for kind, n in self.run(event_types_query(where))]

    def timeseries(self, where: EventFilter, step_ms: int) -> list[tuple[int, int]]:
        return [(int(str(start)), int(str(n))) for start, n in self.run(timeseries_query(where, step_ms))]

    def dead_letters(self, reason: str | None, limit: int, after: Position | None = None) -> list[StoredDeadLetter]:
        rows = self.run(dead_letters_query(reason, limit, after), binary=("payload",))
        return [_dead_letter(row) for row in rows]

    def count_events(self) -> int:
        """Events as users see them: each id once, eventpipe's own probes left out."""
        return sum(self._all_time().values())

    def count_dead_letters(self) -> int:
        return self._scalar(Query("SELECT count() FROM dead_letters FINAL", {}))

    def dead_letter_reasons(self) -> dict[str, int]:
        rows = self.run(Query("SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason", {}))
        return {str(reason): int(str(count)) for reason, count in rows}

    def run(self, query: Query, binary: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
        """Run `query`; columns named in `binary` come back as bytes, undecoded."""
        formats: dict[str, str | dict[str, str]] | None = dict.fromkeys(binary, "bytes") if binary else None
        with classified():
            result = self._client.query(query.sql, parameters=query.parameters, column_formats=formats)
            return [tuple(row) for row in result.result_rows]

    def _all_time(self) -> Counts:
        """Counts by event type over all time: kept days from the tally, changed days through FINAL.

        The parts are listed again after the count, and a day is kept only if
        its parts did not change meanwhile: a count the query took from
        another set of parts than the signature says is used once, never kept.
        """
        before = self._parts()
        if not coverable(before):
            return {str(kind): int(str(n)) for kind, n in self.run(event_types_query(EventFilter()))}
        signatures = day_signatures(before)
        kept = self._tally.kept(signatures)
        stale = sorted(day for day in signatures if day not in kept)
        fresh: dict[int, Counts] = {day: {} for day in stale}
        if stale:
            for day, kind, n in self.run(day_counts_query(stale)):
                fresh[int(str(day))][str(kind)] = int(str(n))
            after = day_signatures(self._parts())
            for day in stale:
                if after.get(day) == signatures[day]:
                    self._tally.keep(day, signatures[day], fresh[day])
        return added([*kept.values(), *fresh.values()])

    def _parts(self) -> list[Part]:
        return [Part(str(name), int(str(low)), int(str(high))) for name, low, high in self.run(PARTS_QUERY)]

    def _scalar(self, query: Query) -> int:
        return int(str(self.run(query)[0][0]))


def _event(row: tuple[object, ...]) -> Event:
    event_id, event_type, timestamp_ms, received_ms, user_id, topic, properties = row
    return Event(
        str(event_id),
        str(event_type),
        int(str(timestamp_ms)),
        int(str(received_ms)),
        None if user_id is None else str(user_id),
        str(topic),
        str(properties),
    )


def _dead_letter(row: tuple[object, ...]) -> StoredDeadLetter:
    dead_letter_id, received_ms, topic, reason, detail, payload, payload_size = row
    return StoredDeadLetter(
        str(dead_letter_id),
        int(str(received_ms)),
        str(topic),
        str(reason),
        str(detail),
        payload if isinstance(payload, bytes) else str(payload).encode(),
        int(str(payload_size)),
    )
