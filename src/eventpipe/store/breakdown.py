"""Breakdowns: a metric per value of a field, and over all, in one read of the window through FINAL.

One scan serves both: GROUPING SETS ((key), ()) aggregates by key and over
everything at once, and the total is not derived from the items, since
distinct users, averages, minimums and maximums do not add up. The query
sorts the total row first, then the items by value descending and key, and
stops after `limit` items: the answer is cut in ClickHouse, and a key is cut
to KEY_CHARS characters before it is grouped, so the answer is bounded in
bytes before any of it is fetched.

The aggregates run on FINAL's output with the filters in WHERE (store.query),
so a redelivered copy is never counted twice and never stands in for the
copy FINAL keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from eventpipe.events.condition import Field
from eventpipe.events.metric import Metric
from eventpipe.store.predicate import Binder
from eventpipe.store.query import EventFilter, Query, event_source

Run = Callable[[Query], Sequence[tuple[object, ...]]]
# Keys longer than this are cut before grouping, so keys sharing their first
# KEY_CHARS characters are one item: 1000 items stay under 2 MB of JSON.
KEY_CHARS = 200
# A breakdown by a field of many distinct values (a producer's unique ids or texts) holds a key for each while
# it counts: over 1M distinct values of 200 characters one request took 385 MB beside the process's 290, eight
# at once 480 MB, on the embedded engine, which has no memory limit of its own. Past this much, ClickHouse
# writes its partial counts to its tmp folder (in the store) and merges them from there: eight at once then
# took 210 MB, in 3.6 to 4.3 s against 1.6. A breakdown of thousands of keys never gets near it.
SPILL_BYTES = 64 * 1024 * 1024
COUNTS = {"count": "count()", "users": "uniqExact(user_id)"}
AGGREGATES = {"sum": "sum", "avg": "avg", "min": "min", "max": "max"}
# A metric over no events: nothing to count or add up is 0; an average, a minimum or a maximum of nothing
# is none (None), not 0, which a chart would show as a real minimum of 0.
OVER_NOTHING: dict[str, float | None] = {"count": 0, "users": 0, "sum": 0}


class Breakdown(NamedTuple):
    items: list[tuple[str | None, float]]
    total: float | None


def breakdown_query(where: EventFilter, by: Field, metric: Metric, limit: int) -> Query:
    table, conditions, parameters = event_source(where)
    binder = Binder(parameters, "breakdown")
    key = binder.key(by, KEY_CHARS)
    if metric.field is None:
        value = COUNTS[metric.kind]
    else:
        # sum, avg, min and max take numbers only: events whose property is
        # anything else (missing, text, a boolean) are left out of the breakdown.
        number = binder.number(metric.field)
        conditions.append(f"isNotNull({number})")
        value = f"{AGGREGATES[metric.kind]}({number})"
    parameters["limit"] = limit + 1  # the total's row, then `limit` items
    sql = " ".join(
        (
            "SELECT",
            key,
            "AS key,",
            value,
            "AS value, grouping(key) AS whole FROM",
            table,
            "FINAL WHERE",
            " AND ".join(conditions),
            "GROUP BY GROUPING SETS ((key), ()) ORDER BY whole DESC, value DESC, key LIMIT {limit:UInt32}",
            f"SETTINGS max_bytes_before_external_group_by = {SPILL_BYTES:d}",
        )
    )
    return Query(sql, parameters)


def breakdown(run: Run, where: EventFilter, by: Field, metric: Metric, limit: int) -> Breakdown:
    """The metric per key, most first (ties by key, a missing value's NULL key last), and over all."""
    total = OVER_NOTHING.get(metric.kind)
    items: list[tuple[str | None, float]] = []
    for key, value, whole in run(breakdown_query(where, by, metric, limit)):
        if int(str(whole)):
            # An aggregate over no numbers is NULL (or no row at all, for an empty window).
            total = OVER_NOTHING.get(metric.kind) if value is None else _number(value)
        else:
            # An item's events all have a number (isNotNull in WHERE): its value is never NULL.
            items.append((None if key is None else str(key), _number(value)))
    return Breakdown(items, total)


def _number(value: object) -> float:
    if isinstance(value, int | float):
        return value
    return float(str(value))
