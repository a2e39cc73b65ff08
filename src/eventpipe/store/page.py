"""The pages of events and of dead letters, newest first, walked by keyset cursors (Position).

A page is bounded in bytes before any of it is read: its extent query sums an
upper bound of each row's JSON (from string lengths alone, which ClickHouse
reads without the strings) over the page's order and keeps the rows within
the cap (store.query.PAGE_BYTES); only then does the page query read those
rows whole.
"""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.store.query import (
    DEAD_LETTER_BYTES,
    DEAD_LETTER_FIELDS,
    EVENT_BYTES,
    EVENT_FIELDS,
    EventFilter,
    Query,
    event_source,
    statement,
)
from eventpipe.store.status import CONDITIONS as STATUS_CONDITIONS

# Each list is newest first, ties broken by id: the order keyset cursors walk.
EVENT_ORDER = "ORDER BY timestamp DESC, event_id DESC"
DEAD_LETTER_ORDER = "ORDER BY received_at DESC, dead_letter_id DESC"


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
    table, conditions, parameters = event_source(where)
    _after(conditions, parameters, after, "timestamp", "event_id")
    key = ("timestamp", "event_id", EVENT_ORDER)
    return _extent(key, EVENT_BYTES, table, conditions, parameters, limit, max_bytes)


def events_query(
    where: EventFilter, limit: int, after: Position | None = None, through: Position | None = None
) -> Query:
    """The first `limit` events after `after`, up to and including `through`."""
    table, conditions, parameters = event_source(where)
    key = ("timestamp", "event_id", EVENT_ORDER)
    return _page(EVENT_FIELDS, table, key, conditions, parameters, limit, after, through)


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
    return Query(statement(fields, table, conditions, order + " LIMIT {limit:UInt32}"), parameters)


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
    candidates = statement(", ".join((time_column, id_column, row_bytes + " AS size")), table, conditions, order)
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
