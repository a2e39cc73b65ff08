"""The export walk: every event a filter selects, oldest first, one bounded page at a time.

Not one query over the whole filter: with chDB a streamed result holds the
client's one connection until it is read to the end, so every other request
of the API would wait on the slowest export client; with a server it holds a
query open for as long as the client takes to read. Instead the walk reads
pages in the tables' own sort order, (timestamp, event_type, event_id) (one
user's rows are in that order in events_by_user too), each starting after the
last key served: the primary key skips every granule before it, and FINAL,
reading in key order, stops once the page is full (1M events: 17 ms for a
page in the middle of the table, 131 ms ordered by (timestamp, event_id),
which FINAL cannot read in order). Between two pages no query is open, so a
client that reads slowly holds nothing in ClickHouse, and one that has gone
away is simply not asked for another page.

Every query also reads a bounded window of time: a filter the sort key
cannot use (a rare event type) would otherwise make one query read all the
rows after the position to fill its page (on chDB, holding the client that
every other request waits for; on a server, past the read-only user's
max_execution_time). The windows are cut from the parts' time ranges and row
counts (system.parts, read once), about WINDOW_ROWS stored rows each, so a
query reads at most about that many rows whatever the filter keeps, and
years without data are crossed in one window. A window that fills its page
is not read to its end: LIMIT stops the read, and the next page starts where
that one ended. The last window, from the newest part on, is open-ended, so
events stored during the export ahead of it are in it. One user's export
takes a single window: events_by_user gives the primary key that user's rows
only, so no query reads more than they are.

A page is bounded in rows and, before it is read, in bytes, as a page of
/events is (store.query): an extent query sums each row's JSON upper bound
(string sizes only) in page order and keeps the rows within the byte cap. A
page asks for twice the rows the page before kept when the byte cap cut it
(_next_ask): a filter is evaluated on every candidate, however few are kept. The
sort key is unique after FINAL (copies of an event share it and collapse), so
"after the last key" neither repeats nor skips a row. Rows stored behind the
walk's position while it runs are not in the export; rows stored ahead are.
Every value is a bound parameter; no query sets a setting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

from eventpipe.events import Event
from eventpipe.store.query import (
    EVENT_BYTES,
    EVENT_FIELDS,
    PAGE_BYTES,
    SORT_KEY,
    EventFilter,
    Key,
    Query,
    after_key,
    event_source,
    statement,
)
from eventpipe.store.window import Windows, in_ms

ORDER = f"ORDER BY {SORT_KEY}"
# A page: at most this many rows and this many bytes of JSON (about 10,000
# demo events of 300 bytes fill both at once). The API holds about three times
# the bytes while it formats a page and the server sends the one before.
PAGE_ROWS = 10_000
# Stored rows one window covers: a query over them under a filter that keeps
# none reads in about 0.25 s here.
WINDOW_ROWS = 250_000

Run = Callable[[Query], list[tuple[object, ...]]]


class Extent(NamedTuple):
    """Of the `candidates` rows of the next page (at most its rows), the first `kept`
    fit in the byte cap, and `last` is the key they end at."""

    candidates: int
    kept: int
    last: Key | None


def parts_query(where: EventFilter) -> Query:
    """The time range, in whole seconds, and the rows of every active part of the
    table a read of `where` takes: its partition minmax index, no row read."""
    sql = (
        "SELECT toUnixTimestamp(min_time), toUnixTimestamp(max_time), rows FROM system.parts"
        " WHERE database = currentDatabase() AND table = {table:String} AND active"
    )
    return Query(sql, {"table": event_source(where)[0]})


def extent_query(where: EventFilter, after: Key | None, rows: int, max_bytes: int) -> Query:
    """One row: the rows of the next page, how many fit in `max_bytes` (at least
    one, so the walk always moves on), and the key the fitting ones end at.
    Reads the sort key and string sizes only, never properties."""
    table, conditions, parameters = event_source(where)
    after_key(conditions, parameters, after)
    candidates = statement(f"{SORT_KEY}, {EVENT_BYTES} AS size", table, conditions, ORDER)
    fields = (
        "toUnixTimestamp64Milli(timestamp) AS time_ms, event_type AS type, event_id AS id, size,"
        f" sum(size) OVER ({ORDER} ROWS UNBOUNDED PRECEDING) AS running"
    )
    # Sizes are positive, so running = size on the first row only.
    kept = "running <= {max_bytes:UInt64} OR running = size"
    outer = f"count(), countIf({kept}), argMaxIf((time_ms, type, id), (time_ms, type, id), {kept})"
    running = " ".join(("SELECT", fields, "FROM (", candidates, "LIMIT {rows:UInt32} )"))
    sql = " ".join(("SELECT", outer, "FROM (", running, ")"))
    return Query(sql, parameters | {"rows": rows, "max_bytes": max_bytes})


def page_query(where: EventFilter, after: Key | None, through: Key, rows: int) -> Query:
    """The first `rows` events after `after`, up to and including `through`, oldest first."""
    table, conditions, parameters = event_source(where)
    after_key(conditions, parameters, after)
    bound = "fromUnixTimestamp64Milli({through_ms:Int64}, 'UTC')"
    conditions.append(
        f"timestamp <= {bound} AND ({SORT_KEY}) <= ({bound}, {{through_type:String}}, {{through_id:String}})"
    )
    parameters |= {"through_ms": through.time_ms, "through_type": through.event_type, "through_id": through.event_id}
    parameters["rows"] = rows
    return Query(statement(EVENT_FIELDS, table, conditions, f"{ORDER} LIMIT {{rows:UInt32}}"), parameters)


def _next_ask(extent: Extent, asked: int, rows: int) -> int:
    """How many candidates the page after `extent` reads: twice what this one kept when the byte cap cut it,
    else twice what it asked, up to `rows`.

    A filter is evaluated on every candidate, a property's on its whole properties, and the cap keeps what
    fits: asked for PAGE_ROWS each time, pages of 60 KB events kept 138 and each parsed what followed them in
    the window. With one property filter, 14,000 such events took 42 s of CPU to export (23.5 s), 21 s (12.4)
    so, against 5 unfiltered; a day of 1M small events among 20,000 such, 94 s, 87 so. What is left is
    FINAL reading in order a few granules of every part beyond what LIMIT keeps."""
    if extent.kept < extent.candidates:
        return min(rows, max(2 * extent.kept, 1))
    return min(rows, 2 * asked)


class Export:
    """Walks the events a filter selects, oldest first, in pages of Events."""

    def __init__(self, run: Run, window_rows: int = WINDOW_ROWS) -> None:
        # Reader.run: classified errors, one client shared with every other read.
        self._run = run
        self._window_rows = window_rows

    def pages(
        self,
        where: EventFilter,
        rows: int = PAGE_ROWS,
        max_bytes: int = PAGE_BYTES,
        stopped: threading.Event | None = None,
    ) -> Iterator[list[Event]]:
        """Every event `where` selects, each once, in pages of at most `rows`
        events whose JSON fits in `max_bytes` (or of one event larger than that).
        Queries run only as the pages are taken: stop taking them to stop the walk.
        A page being read stops at its next window once `stopped` is set: a filter
        that keeps little reads window after window for one page (minutes at 100M)."""
        windows = self._windows(where)
        start = max(where.since_ms or 0, windows.oldest or 0)
        after: Key | None = None
        ask = rows  # candidates the next extent reads: see _next_ask
        while stopped is None or not stopped.is_set():
            end = windows.end(start)
            if end is not None and where.until_ms is not None and end >= where.until_ms:
                end = None
            window = where._replace(since_ms=start, until_ms=where.until_ms if end is None else end)
            extent = self._extent(extent_query(window, after, ask, max_bytes))
            served, short = 0, False
            if extent.last is not None:
                found = self._run(page_query(window, after, extent.last, extent.kept))
                page = [Event._make((*row, False)) for row in found]  # read back: no undated flag to carry
                served = len(page)
                if page:
                    yield page
                # From the last row served: rows stored inside the extent since it
                # was counted push its end out of the page, and must come next.
                after = Key.of(page[-1]) if page else extent.last
                # Even from a page that was not full: the window's counted rows were not all served.
                short = after != extent.last
            if (extent.candidates == ask or served < extent.candidates or short) and after is not None:
                start = after.time_ms  # the window holds more: the next page starts where this one ended
            elif end is None:
                return
            else:
                start, after = end, None
            ask = _next_ask(extent, ask, rows)

    def _windows(self, where: EventFilter) -> Windows:
        if event_source(where)[0] != "events":
            return Windows([], self._window_rows)  # one user's rows: one window
        rows = self._run(parts_query(where))
        parts = [in_ms(int(str(low)), int(str(high)), int(str(count))) for low, high, count in rows]
        return Windows(parts, self._window_rows)

    def _extent(self, query: Query) -> Extent:
        candidates, kept, end = self._run(query)[0]
        time_ms, event_type, event_id = end if isinstance(end, tuple) else (0, "", "")
        last = Key(int(str(time_ms)), str(event_type), str(event_id)) if int(str(kept)) else None
        return Extent(int(str(candidates)), int(str(kept)), last)
