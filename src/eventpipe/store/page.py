"""The pages of events and of dead letters, newest first, walked by keyset cursors (Position).

A page is bounded in bytes before any of it is read: its extent query sums an
upper bound of each row's JSON (from string lengths alone, which ClickHouse
reads without the strings) over the page's order and keeps the rows within
the cap (store.query.PAGE_BYTES); only then does the page query read those
rows whole. A page of events tries the newest day and month first (`windows`), and the page after it
starts where the rows served end (`resume`): pure policy, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.store.query import (
    DEAD_LETTER_BYTES,
    DEAD_LETTER_FIELDS,
    EVENT_BYTES,
    EVENT_FIELDS,
    SORT_KEY,
    EventFilter,
    Query,
    event_source,
    one_user,
    statement,
)
from eventpipe.store.status import CONDITIONS as STATUS_CONDITIONS

# Each list is newest first, ties broken by id: the order keyset cursors walk.
# Events by type, then id, as both tables sort them after the time (so they
# are read in that order): an id reused under two types is two events, and
# ordered by time and id alone two such with one timestamp tied, and a page
# ending between them skipped the other.
EVENT_ORDER = "ORDER BY " + ", ".join(f"{column} DESC" for column in SORT_KEY.split(", "))
DEAD_LETTER_ORDER = "ORDER BY received_at DESC, dead_letter_id DESC"


class Position(NamedTuple):
    """Where a page ended: the sort key of its last row. `tie` is an event's type (None for
    dead letters and erasures, whose ids are unique, and in a cursor issued before it was kept)."""

    time_ms: int
    id: str
    tie: str | None = None


# A list's sort key: its time column, its id column, the column ordered
# between the two (None where ids are unique), and its ORDER BY.
Key = tuple[str, str, str | None, str]
EVENT_KEY: Key = ("timestamp", "event_id", "event_type", EVENT_ORDER)
DEAD_LETTER_KEY: Key = ("received_at", "dead_letter_id", None, DEAD_LETTER_ORDER)


class Extent(NamedTuple):
    """What an extent query found: of the first `candidates` rows after the
    cursor (at most the limit), the first `kept` fit in the byte cap, and
    `last` is where they end (None when none are kept)."""

    candidates: int
    kept: int
    last: Position | None


def events_extent_query(where: EventFilter, limit: int, after: Position | None, max_bytes: int) -> Query:
    table, conditions, parameters = event_source(where)
    _after(conditions, parameters, after, EVENT_KEY)
    return _extent(EVENT_KEY, EVENT_BYTES, table, conditions, parameters, limit, max_bytes)


def events_query(
    where: EventFilter, limit: int, after: Position | None = None, through: Position | None = None
) -> Query:
    """The first `limit` events after `after`, up to and including `through`."""
    table, conditions, parameters = event_source(where)
    return _page(EVENT_FIELDS, table, EVENT_KEY, conditions, parameters, limit, after, through)


def dead_letters_extent_query(
    reason: str | None, limit: int, after: Position | None, max_bytes: int, status: str | None = None
) -> Query:
    conditions, parameters = _dead_letter_conditions(reason, status)
    _after(conditions, parameters, after, DEAD_LETTER_KEY)
    return _extent(DEAD_LETTER_KEY, DEAD_LETTER_BYTES, "dead_letters", conditions, parameters, limit, max_bytes)


def dead_letters_query(
    reason: str | None,
    limit: int,
    after: Position | None = None,
    through: Position | None = None,
    status: str | None = None,
) -> Query:
    """The first `limit` dead letters after `after`, up to and including `through`."""
    conditions, parameters = _dead_letter_conditions(reason, status)
    return _page(DEAD_LETTER_FIELDS, "dead_letters", DEAD_LETTER_KEY, conditions, parameters, limit, after, through)


# A page of events reads the day before its upper end first, then 32 days,
# then everything its filter allows. Rows of a newer window all come before
# any older row in the page order, so a window that fills the page is the page.
# Without this, the page's FINAL opens every part of every partition: 100k
# events a producer spread over 25 years (about 300 monthly partitions) made
# the newest page of 1M events 10x slower (20 -> 196 ms).
WINDOWS_MS = (86_400_000, 32 * 86_400_000)


def windows(where: EventFilter, after: Position | None, now_ms: int) -> list[EventFilter]:
    """The filters to try in turn: `where` narrowed to the newest day and month before its upper end, then `where`.

    Not for one user's page: a user's newest events may be months old, and
    each window tried would be a query more."""
    if one_user(where):
        return [where]  # the primary key finds a user's rows in every part of events_by_user
    upper = after.time_ms if after else where.until_ms if where.until_ms is not None else now_ms
    narrower = [
        where._replace(since_ms=upper - span)
        for span in WINDOWS_MS
        if where.since_ms is None or upper - span > where.since_ms
    ]
    return [*narrower, where]


def resume(extent: Extent, limit: int, served: int, last: Position) -> Position | None:
    """Where the page after `extent` starts, given how many rows were served and the last one.

    The page query reads the extent's range again: rows stored in it since (a
    late event, a redelivery) push rows out past its limit, and the next page
    must then go on from the last row served, not skip them."""
    resume = last if served == extent.kept else extent.last
    more = extent.kept < extent.candidates or extent.candidates == limit
    return resume if more or resume != extent.last else None


def _page(
    fields: str,
    table: str,
    key: Key,
    conditions: list[str],
    parameters: dict[str, object],
    limit: int,
    after: Position | None,
    through: Position | None,
) -> Query:
    """A page of `table` in the order `key` names, between two positions."""
    _after(conditions, parameters, after, key)
    _through(conditions, parameters, through, key)
    parameters["limit"] = limit
    return Query(statement(fields, table, conditions, key[3] + " LIMIT {limit:UInt32}"), parameters)


def _dead_letter_conditions(reason: str | None, status: str | None = None) -> tuple[list[str], dict[str, object]]:
    conditions, parameters = ["1"], dict[str, object]()
    if reason is not None:
        conditions, parameters = ["reason = {reason:String}"], {"reason": reason}
    if status is not None:
        conditions.append(STATUS_CONDITIONS[status])
    return conditions, parameters


def _extent(
    key: Key,
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
    time_column, id_column, tie_column, order = key
    columns = (time_column, id_column, *((tie_column,) if tie_column else ()), row_bytes + " AS size")
    candidates = statement(", ".join(columns), table, conditions, order)
    fields = ", ".join(
        (
            f"toUnixTimestamp64Milli({time_column}) AS time_ms",
            f"{id_column} AS id",
            *((f"toString({tie_column}) AS tie",) if tie_column else ()),
            "size",
            f"sum(size) OVER ({order} ROWS UNBOUNDED PRECEDING) AS running",
        )
    )
    # Sizes are positive, so running = size on the first row only.
    kept = "running <= {max_bytes:UInt64} OR running = size"
    end, order_of = ("(time_ms, id, tie)", "(time_ms, tie, id)") if tie_column else ("(time_ms, id)",) * 2
    outer = f"count(), countIf({kept}), argMinIf({end}, {order_of}, {kept})"
    running = " ".join(("SELECT", fields, "FROM (", candidates, "LIMIT {limit:UInt32} )"))
    return Query(
        " ".join(("SELECT", outer, "FROM (", running, ")")), parameters | {"limit": limit, "max_bytes": max_bytes}
    )


def _after(conditions: list[str], parameters: dict[str, object], after: Position | None, key: Key) -> None:
    """Rows after the cursor in newest-first order."""
    if after is not None:
        conditions.append(_bound(key, after, "after", "<=", "<", parameters))


def _through(conditions: list[str], parameters: dict[str, object], through: Position | None, key: Key) -> None:
    """Rows up to and including `through` in newest-first order (the end of a page's extent)."""
    if through is not None:
        conditions.append(_bound(key, through, "through", ">=", ">=", parameters))


def _bound(key: Key, position: Position, name: str, time_op: str, key_op: str, parameters: dict[str, object]) -> str:
    """The sort key against `position`, as store.query.after_key compares it: a plain bound on the
    time column first, which the primary key and minmax index use to skip granules, then the tuple."""
    time_column, id_column, tie_column, _ = key
    if tie_column and position.tie is None:
        raise ValueError("a position in a list ordered by type, then id, needs its type")
    bound = f"fromUnixTimestamp64Milli({{{name}_ms:Int64}}, 'UTC')"
    columns, values = [time_column, id_column], [bound, f"{{{name}_id:String}}"]
    parameters |= {f"{name}_ms": position.time_ms, f"{name}_id": position.id}
    if tie_column:
        columns.insert(1, tie_column)
        values.insert(1, f"{{{name}_tie:String}}")
        parameters[f"{name}_tie"] = position.tie
    return f"{time_column} {time_op} {bound} AND ({', '.join(columns)}) {key_op} ({', '.join(values)})"
