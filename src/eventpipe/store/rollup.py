"""Counts by event type and time through the tally: kept buckets from memory, changed ones through FINAL.

All time is counted by day, but today and yesterday by hour; a window (the statistics' `since`/`until`) by its
whole hours, plus its ragged ends counted live with the window's own query.
A window wider than MAX_HOURS keeps its first MAX_HOURS in the tally and
counts the rest live too. A window open to the past, a user filter, property
filters (`where`: the tally counts by type and time only), parts without a
known time range, or more (bucket, type) pairs to count at once than the tally
keeps, go to the plain query instead (None here), which counts the window
through FINAL and fetches only the types it lists. One Rollup per process,
shared by its requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from eventpipe.store.query import (
    PARTS_QUERY,
    EventFilter,
    Query,
    bucket_counts_query,
    event_types_query,
    timeseries_query,
)
from eventpipe.store.tally import DAY_MS, HOUR_MS, MAX_ENTRIES, Counts, Part, Tally, added, coverable, signatures

Run = Callable[[Query], Sequence[tuple[object, ...]]]
# The hours a window keeps in the tally: a month, so a window's kept
# (hour, type) pairs stay a small share of the tally's MAX_ENTRIES.
MAX_HOURS = 31 * 24
# The days all time counts by hour: today (or the newest day stored) and the day before (Rollup._all_time).
HOT_DAYS = 2
# The rows a count here fetches at most, each query cut in ClickHouse: a producer chooses how many types
# there are, and a million of them would have been a million rows at every call. More than the tally keeps
# could never be kept, and would be counted again at every call: the plain query answers instead.
MAX_ROWS = MAX_ENTRIES
# Seconds the plain query answers alone after a count went past MAX_ROWS: else every call fetched the
# rows again to drop them, on top of the plain query. All time and windows apart: a store whose all-time
# count overflows may still count a day's window on the tally, which the plain query may not finish in time.
OVERFLOW_PAUSE_S = 60.0
ALL_TIME, WINDOW = "all time", "window"


class Rollup:
    def __init__(
        self, run: Run, now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000, max_rows: int = MAX_ROWS
    ) -> None:
        self._run = run
        self._max_rows = max_rows
        # time.monotonic() until which counts past max_rows leave them to the plain query, by ALL_TIME or WINDOW
        self._paused_until = {ALL_TIME: 0.0, WINDOW: 0.0}
        self._now_ms = now_ms
        self._days = Tally()
        self._hours = Tally()

    def event_types(self, where: EventFilter) -> Counts | None:
        """Events per type in `where`, or None when the plain query must answer."""
        if where.user_id is not None or where.where:
            return None
        all_time = where.since_ms is None and where.until_ms is None
        if self._paused(ALL_TIME if all_time else WINDOW):
            return None
        parts = self._parts()
        if not coverable(parts):
            return None
        if all_time:
            counted = self._all_time(parts)
        else:
            split = self._window(where, parts)
            if split is None:
                return None
            hours, edges = split
            live = list(hours.values())
            for edge in edges:
                rows = self._capped(event_types_query(edge, most=self._max_rows + 1), WINDOW)
                if rows is None:
                    return None
                live.append({str(k): int(str(n)) for k, n in rows})
            counted = added(live)
        return None if counted is None else _only(counted, where)

    def timeseries(self, where: EventFilter, step_ms: int) -> dict[int, int] | None:
        """Events per bucket start in `where`, or None when the plain query must answer."""
        if where.user_id is not None or where.where or step_ms % HOUR_MS or self._paused(WINDOW):
            return None
        parts = self._parts()
        split = self._window(where, parts) if coverable(parts) else None
        if split is None:
            return None
        hours, edges = split
        out: dict[int, int] = {}
        for hour, counts in hours.items():
            start = hour * HOUR_MS // step_ms * step_ms
            out[start] = out.get(start, 0) + sum(_only(counts, where).values())
        for edge in edges:
            for edge_start, n in self._run(timeseries_query(edge, step_ms)):
                out[int(str(edge_start))] = out.get(int(str(edge_start)), 0) + int(str(n))
        return {start: n for start, n in out.items() if n}

    def _all_time(self, parts: list[Part]) -> Counts | None:
        """Every day's counts: HOT_DAYS of them by hour, up to today or the newest day stored if older, the
        others by day.

        Rows arrive in today all day long, each insert a new part of it, so that
        day's bucket never stayed kept and was counted whole at every call: at 200
        events/s, about 1M rows by the early morning (a soak) and 17M by night. By
        hour, a call counts the hours whose parts changed: the current one, and those
        a merge just rewrote. Yesterday too, for the hours a late merge rewrites; days
        ahead (events a producer dates into the future) stay by day, however far."""
        if not parts:
            # An empty `events`, or none at all (a store never migrated, a DSN naming another database),
            # which the parts list cannot tell apart: the plain query does, and answers an empty table at once.
            return None
        newest = max(part.max_s for part in parts) * 1000 // DAY_MS
        first = min(newest, self._now_ms() // DAY_MS) - HOT_DAYS + 1
        end = first + HOT_DAYS
        days = {day: names for day, names in signatures(parts, DAY_MS).items() if not first <= day < end}
        hours = signatures(parts, HOUR_MS, first * DAY_MS // HOUR_MS, end * DAY_MS // HOUR_MS)
        if (by_day := self._counted(self._days, DAY_MS, parts, days, ALL_TIME)) is None:
            return None
        if (by_hour := self._counted(self._hours, HOUR_MS, parts, hours, ALL_TIME)) is None:
            return None
        return added([*by_day.values(), *by_hour.values()])

    def _window(self, where: EventFilter, parts: list[Part]) -> tuple[dict[int, Counts], list[EventFilter]] | None:
        """Counts of the whole hours inside the window, and the filters of its ends outside them."""
        if where.since_ms is None:
            return None  # a window open to the past spans all history: the plain query
        first = -(-where.since_ms // HOUR_MS)
        if where.until_ms is not None:
            tail = where.until_ms // HOUR_MS
        else:
            tail = max(((part.max_s * 1000 + 999) // HOUR_MS for part in parts), default=first - 1) + 1
        # The tally keeps at most a month of hours from `since`; the rest of a
        # wider window is counted live, so it reads a month fewer rows than
        # the plain query would (at 10M events, 45 days: 45 -> 21 ms).
        end = min(tail, first + MAX_HOURS)
        if end <= first:
            return {}, [where]
        edges = []
        if where.since_ms < first * HOUR_MS:
            edges.append(where._replace(until_ms=first * HOUR_MS))
        # Up to `until`, or past the newest part's hour when the window is open.
        if end * HOUR_MS < (where.until_ms if where.until_ms is not None else tail * HOUR_MS):
            edges.append(where._replace(since_ms=end * HOUR_MS))
        hours = self._counted(self._hours, HOUR_MS, parts, signatures(parts, HOUR_MS, first, end), WINDOW)
        return None if hours is None else (hours, edges)

    def _counted(
        self, tally: Tally, width_ms: int, parts: list[Part], wanted: dict[int, tuple[str, ...]], kind: str
    ) -> dict[int, Counts] | None:
        """Counts of every bucket in `wanted`: kept ones from `tally`, the others through FINAL; None when
        those others hold more than max_rows (bucket, type) pairs.

        The parts are listed again after the count, and a bucket is kept only
        if its parts did not change meanwhile: a count the query took from
        other parts than the signature says is used once, never kept.
        """
        kept = tally.kept(wanted)
        stale = sorted(bucket for bucket in wanted if bucket not in kept)
        if not stale:
            return kept
        rows = self._capped(bucket_counts_query(width_ms, stale, self._max_rows + 1), kind)
        if rows is None:
            return None
        fresh: dict[int, Counts] = {bucket: {} for bucket in stale}
        for bucket, event_type, n in rows:
            fresh[int(str(bucket))][str(event_type)] = int(str(n))
        after = signatures(self._parts(), width_ms, stale[0], stale[-1] + 1)
        for bucket in stale:
            if after.get(bucket) == wanted[bucket]:
                tally.keep(bucket, wanted[bucket], fresh[bucket])
        return kept | fresh

    def _paused(self, kind: str) -> bool:
        return time.monotonic() < self._paused_until[kind]

    def _capped(self, query: Query, kind: str) -> Sequence[tuple[object, ...]] | None:
        """The rows of `query` (cut at max_rows + 1), or None past max_rows, which leaves the counts of
        `kind` to the plain query for a while."""
        rows = self._run(query)
        if len(rows) <= self._max_rows:
            return rows
        self._paused_until[kind] = time.monotonic() + OVERFLOW_PAUSE_S
        return None

    def _parts(self) -> list[Part]:
        return [Part(str(name), int(str(low)), int(str(high))) for name, low, high in self._run(PARTS_QUERY)]


def _only(counts: Counts, where: EventFilter) -> Counts:
    """The counts of the types `where` allows: its event_type, and its scope (a key's event types)."""
    if where.event_type is not None:
        counts = {k: n for k, n in counts.items() if k == where.event_type}
    if where.event_types is not None:
        counts = {k: n for k, n in counts.items() if k in where.event_types}
    return counts
