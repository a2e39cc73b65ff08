"""The arrival feed's reads of an epoch's rows of `arrivals` (store.feed), as queries: the candidates
after a client's place, keys and sizes, then the first copy of each, which is served when its number is in
the epoch and it passes the filter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventpipe.store.query import (
    EVENT_BYTES,
    EVENT_FIELDS,
    SORT_KEY,
    EventFilter,
    Key,
    Query,
    after_key,
    event_conditions,
)

if TYPE_CHECKING:
    from eventpipe.store.feed import Place


def _epoch_rows(where: EventFilter, place: Place, since_ms: int, prune: bool) -> tuple[list[str], dict[str, object]]:
    """Conditions on `arrivals` for the rows of the epoch after the place that `where` admits: copies
    whose number is in (lo, hi], so every event whose first copy is there has at least one row among them."""
    conditions, parameters = event_conditions(where)
    if prune:
        # Whole parts whose block range misses the epoch are left out before any is read, by the
        # names of the parts the query sees (partition_min_max_level): no merge can race it. Only
        # pruning: the row's own number below decides, so leaving this out never changes the rows.
        conditions += [
            "toUInt64(splitByChar('_', _part)[3]) > {lo:UInt64}",
            "toUInt64(splitByChar('_', _part)[2]) <= {hi:UInt64}",
        ]
    conditions += [
        "_block_number > {lo:UInt64}",
        "_block_number <= {hi:UInt64}",
        "timestamp >= fromUnixTimestamp64Milli({epoch_since_ms:Int64}, 'UTC')",
    ]
    parameters |= {"lo": place.lo, "hi": place.hi, "epoch_since_ms": since_ms}
    after_key(conditions, parameters, place.after)
    return conditions, parameters


def candidates(where: EventFilter, place: Place, since_ms: int, limit: int, prune: bool, until_ms: int | None) -> Query:
    """The key and JSON size of the first `limit` rows of the epoch after the place, from `since_ms`
    and before `until_ms` (None: to the end), in key order."""
    conditions, parameters = _epoch_rows(where, place, since_ms, prune)
    if until_ms is not None:
        conditions.append("timestamp < fromUnixTimestamp64Milli({epoch_until_ms:Int64}, 'UTC')")
        parameters["epoch_until_ms"] = until_ms
    fields = f"toUnixTimestamp64Milli(timestamp), event_type, event_id, {EVENT_BYTES} AS size"
    sql = (
        f"SELECT {fields} FROM arrivals WHERE {' AND '.join(conditions)}"  # noqa: S608 - constant fragments
        f" ORDER BY {SORT_KEY} LIMIT {{limit:UInt32}}"
    )
    return Query(sql, parameters | {"limit": limit})


def first_copies(where: EventFilter, place: Place, since_ms: int, through: Key, prune: bool) -> Query:
    """For each candidate up to `through` (its key in the epoch, after the place), its first copy (lowest
    number) over all parts, with its size, if it is served: its first number is in this epoch and
    the copy passes the filter."""
    conditions, parameters = _epoch_rows(where, place, since_ms, prune)
    bound = "fromUnixTimestamp64Milli({through_ms:Int64}, 'UTC')"
    # The plain bound on timestamp lets the primary key skip the granules past it (as query.after_key).
    last = f"({bound}, {{through_type:String}}, {{through_id:String}})"
    conditions += [f"timestamp <= {bound}", f"({SORT_KEY}) <= {last}"]
    parameters |= {"through_ms": through.time_ms, "through_type": through.event_type, "through_id": through.event_id}
    # The candidates' keys by reading the epoch's key columns again, not bound as a parameter: a
    # page's keys are tens of KiB that the driver escapes character by character and the engine parses
    # as a literal (at 1M, binding 865 keys took 15 ms, the lookup with them 27), and a server refuses a
    # value over 128 KiB, so they went in several lookups.
    candidates = f"SELECT {SORT_KEY} FROM arrivals WHERE {' AND '.join(conditions)}"  # noqa: S608 - constant fragments
    # Each key's lowest number first, from the key and number columns alone; then the rest of that
    # copy only (the outer filter is in PREWHERE, and its key columns select the granules; LIMIT BY
    # keeps one of copies sharing that number, which one unspecified). Sorting every copy whole to
    # keep one made a key re-sent 1,500 times with 60 KB of properties cost a caught-up client's
    # next poll 279 MiB, and copies never collapse in `arrivals`; so does keeping the lowest copy as
    # the rows stream by (argMin), which reads every copy's properties.
    lowest = (
        f"SELECT {SORT_KEY}, min(_block_number) FROM arrivals"  # noqa: S608 - constant fragments
        f" WHERE ({SORT_KEY}) IN ({candidates}) GROUP BY {SORT_KEY}"
    )
    first = (
        "SELECT event_id, event_type, timestamp, received_at, user_id, topic, properties,"  # noqa: S608 - constant fragments
        f" {EVENT_BYTES} AS size, _block_number AS first FROM arrivals"
        f" PREWHERE ({SORT_KEY}, _block_number) IN ({lowest}) LIMIT 1 BY {SORT_KEY}"
    )
    # Served: the first copy is in this epoch and passes the filter. Only those leave the engine: a
    # page of re-sent copies of events served before would otherwise bring their first copies'
    # properties here to be dropped (1,000 of 64 KiB or more, up to 3x that with escaped line breaks:
    # 64 MiB and more for a page of nothing).
    keep = " AND ".join(["first > {lo:UInt64}", *event_conditions(where)[0]])
    # Not in the sort key's order: that opens a stream per part for a handful of rows (27 MiB over
    # 800 unmerged parts of one key's copies, 3 MiB without).
    sql = (
        f"SELECT {EVENT_FIELDS}, size FROM ({first}) WHERE {keep} ORDER BY {SORT_KEY}"  # noqa: S608 - constant fragments
        " SETTINGS optimize_read_in_order = 0"
    )
    return Query(sql, parameters)
