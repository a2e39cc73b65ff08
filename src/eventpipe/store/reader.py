"""The Reader: runs the read queries (store.query, store.page) and turns rows into values (store.row).

Every read of a table goes through FINAL, so a redelivered event is one row
before ClickHouse has merged its copies, except the lookup by id, which reads
the copies of one id and picks the one FINAL keeps; how the queries keep that
cheap, and which ClickHouse user can run them (readonly=2, the API's), is told
in store.query. Counts by type and time bucket go through the rollup.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Generic, NamedTuple, TypeVar

from clickhouse_connect.driver.client import Client

from eventpipe.errors import StorageError
from eventpipe.events import Event
from eventpipe.events.condition import Field
from eventpipe.events.metric import Metric
from eventpipe.store.bound import Bound
from eventpipe.store.breakdown import Breakdown, breakdown
from eventpipe.store.failure import classified
from eventpipe.store.page import (
    Extent,
    Position,
    dead_letters_extent_query,
    dead_letters_query,
    events_extent_query,
    events_query,
    resume,
    windows,
)
from eventpipe.store.pool import Pool
from eventpipe.store.query import (
    PAGE_BYTES,
    EventFilter,
    Query,
    count_query,
    event_query,
    event_types_query,
    timeseries_query,
)
from eventpipe.store.rollup import Rollup
from eventpipe.store.row import StoredDeadLetter, dead_letter_row, event_row
from eventpipe.store.status import BY_IDS, COUNTS

log = logging.getLogger("eventpipe")


class TypeTally(NamedTuple):
    items: list[tuple[str, int]]  # (type, events), most first
    total: int  # events of every type
    types: int  # types in all, listed or not


# The most types an answer lists: 1,000 types of 128 characters stay under 1 MiB of JSON.
MAX_TYPES = 1_000
Row = TypeVar("Row")


class Page(NamedTuple, Generic[Row]):
    """A page's rows, and where the next page starts (None when this is the last)."""

    rows: list[Row]
    next: Position | None


# Rows a block of every read holds at most (ClickHouse's max_block_size, 65,409 by default, bounds rows, not
# bytes). A read through FINAL merges its parts into blocks of that many rows, properties whole, and a filter
# on a property or a breakdown reads every row of its window: with 64 KiB properties a block could hold 4 GiB.
# Measured on the embedded engine before reads had a memory bound (store.bound): `/events?since=<a day>&where=
# properties.x=1` over 14,000 events of 60 KB in 4 parts took 1,748 MB (eventpipe up from 519 MB to 1.5 GB
# with 20,000 such events among 1M small ones), in 16 parts 1,675 MB; in blocks of 1,024 rows (64 MiB of
# properties at most) 358 and 914 MB. What is left is FINAL reading each part's granules side by side, and
# grows with the parts a window meets, not its rows. Smaller blocks hold less (256 rows: 281 and 634 MB) but
# cost every read: at 10M events the bench's direct reads took 7 to 45% longer in blocks of 256 (one run), in
# blocks of 1,024 2 to 26% in one run and -11 to +14% in another (against 10.3 ms for the newest page, 9.2
# for the last hour; at 1M all within the runs' spread), and a count through FINAL of every row 107 and 32 ms
# against 4.
READ_SETTINGS: dict[str, float] = {"max_block_size": 1024}

# On whose behalf the reads of a context run: the name of the API key whose request they serve (api.flight
# sets it), their lane on the embedded engine (store.pool); "" for reads made on no key's behalf.
CALLER: ContextVar[str] = ContextVar("eventpipe_caller", default="")


class Reader:
    def __init__(
        self,
        client: Client,
        timeout_s: float | None = None,
        probe: Client | None = None,
        more: Callable[[], Client] | None = None,
        origin: str = "",
        memory_bytes: int | None = None,
    ) -> None:
        """`timeout_s`: the longest a read a client can narrow with `since` and `until` may run
        (EVENTPIPE_API_QUERY_TIMEOUT_S): an event page, a live count, a breakdown. A filter that
        selects little reads every row before its page is full, and takes CPU from every other
        request meanwhile (14 s on 2M events in an attack, minutes at 100M). Not the
        tally's counts, the feed, the export's windows or the dead letters: they have no window to
        narrow, and a read cut at the same place each time would never be answered. `probe`: the client
        ping uses, when it must give up sooner than reads do. `more`: makes another client like `client`,
        for reads that run while it is busy (store.pool: the embedded engine's clients run one at a time).
        `origin`: the store and the setting that names it, for the log when it fails. `memory_bytes`: the
        most of ClickHouse's memory any one query may hold (EVENTPIPE_API_QUERY_MEMORY_BYTES): past it a read
        a client can narrow raises CostlyQueryError (422), any other HeavyReadError (503 busy)."""
        self._client = client
        self._origin = f" ({origin})" if origin else ""
        self._pool = Pool(client, more)
        self._probe = probe or client
        self._bound = Bound(timeout_s, memory_bytes)
        self._unbounded = READ_SETTINGS | self._bound.always  # a read's settings without a time bound
        self._unready: str | None = None  # why the last ping failed
        # Counts by type and time, kept across requests: one Reader per process.
        self._rollup = Rollup(self.run)

    @property
    def timeout_s(self) -> float | None:
        """The bound of a read a client can narrow (EVENTPIPE_API_QUERY_TIMEOUT_S), None for none: the feed
        spends about as long on one page's windows before it answers with what it has read (store.feed)."""
        return self._bound.timeout_s

    @property
    def clients_made(self) -> int:
        """Clients of the store this reader has made for its reads (store.pool), its first included."""
        return self._pool.made

    def ping(self) -> StorageError | None:
        """None when ClickHouse answers a query; else why not. Probes ask every few seconds: a reason is
        logged when it changes, and the recovery once."""
        try:
            with classified():
                # The table every read starts from, not `SELECT 1`: a server that answers but has lost the
                # database or its schema serves nothing (the embedded engine answers `SELECT 1` without it).
                self._probe.query("SELECT 1 FROM events LIMIT 0")
            failure = None
        except StorageError as exc:
            failure = exc
        reason = None if failure is None else str(failure)
        if reason != self._unready:
            if failure is not None:
                log.warning("ClickHouse does not answer the API's queries: %s%s", failure, self._origin)
            else:
                log.info("ClickHouse answers the API's queries again")
            self._unready = reason
        return failure

    def event_page(
        self, where: EventFilter, limit: int, after: Position | None = None, max_bytes: int = PAGE_BYTES
    ) -> Page[Event]:
        """Up to `limit` events after `after` whose JSON fits in `max_bytes` (at least one)."""
        # Up to four queries, all within the one bound: each with a bound of its own, a page ran 18 s
        # under a 10 s bound (an attack with a filter that selects nothing, on a busy machine).
        ends = self._bound.deadline()
        for window in windows(where, after, time.time_ns() // 1_000_000):
            extent = self._extent(events_extent_query(window, limit, after, max_bytes), bounded=True, ends=ends)
            if extent.candidates == limit:
                break  # this window fills the page: every row of it comes before any older one
        if extent.last is None:
            return Page([], None)
        page = events_query(window, extent.kept, after, extent.last)
        rows = [event_row(row) for row in self.run(page, bounded=True, ends=ends)]
        last = Position(rows[-1].timestamp_ms, rows[-1].event_id, rows[-1].event_type) if rows else extent.last
        return Page(rows, resume(extent, limit, len(rows), last))

    def events(self, where: EventFilter, limit: int, after: Position | None = None) -> list[Event]:
        return self.event_page(where, limit, after).rows

    def event(self, event_id: str, where: EventFilter = EventFilter()) -> Event | None:  # noqa: B008 - immutable
        """The event with this id that `where` allows, or None. `where` is a key's scope (its event
        types): the lookup reads copies without FINAL, so it may name only what every copy shares."""
        rows = self.run(event_query(event_id, where))
        return event_row(rows[0]) if rows else None

    def event_types(self, where: EventFilter, limit: int = MAX_TYPES) -> TypeTally:
        """Events per type, most first, ties by type (as event_types_query orders them): the `limit`
        first, and the total and the number of types over all. A producer can make any number of
        types, so the answer is cut before it is read, not after."""
        counts = self._rollup.event_types(where)
        if counts is not None:
            ranked = heapq.nsmallest(limit, counts.items(), key=lambda item: (-item[1], item[0]))
            return TypeTally(ranked, sum(counts.values()), len(counts))
        rows = self.bounded(event_types_query(where, limit))
        if not rows:
            return TypeTally([], 0, 0)
        total, types = int(str(rows[0][2])), int(str(rows[0][3]))
        return TypeTally([(str(kind), int(str(n))) for kind, n, _, _ in rows], total, types)

    def timeseries(self, where: EventFilter, step_ms: int) -> list[tuple[int, int]]:
        """Events per bucket start, oldest first, empty buckets left out (as timeseries_query groups them)."""
        counts = self._rollup.timeseries(where, step_ms)
        if counts is not None:
            return sorted(counts.items())
        return [(int(str(start)), int(str(n))) for start, n in self.bounded(timeseries_query(where, step_ms))]

    def breakdown(self, where: EventFilter, by: Field, metric: Metric, limit: int) -> Breakdown:
        """`metric` per value of `by` (the `limit` largest) and over all of `where`, live through FINAL."""
        return breakdown(self.bounded, where, by, metric, limit)

    def dead_letter_page(
        self,
        reason: str | None,
        limit: int,
        after: Position | None = None,
        max_bytes: int = PAGE_BYTES,
        status: str | None = None,
    ) -> Page[StoredDeadLetter]:
        """Up to `limit` dead letters after `after` whose JSON fits in `max_bytes` (at least one),
        only those of a replay `status` when given."""
        extent = self._extent(dead_letters_extent_query(reason, limit, after, max_bytes, status))
        if extent.last is None:
            return Page([], None)
        query = dead_letters_query(reason, extent.kept, after, extent.last, status)
        rows = self._with_status([dead_letter_row(row) for row in self.run(query, binary=("payload",))])
        last = Position(rows[-1].received_ms, rows[-1].dead_letter_id) if rows else extent.last
        return Page(rows, resume(extent, limit, len(rows), last))

    def dead_letters(self, reason: str | None, limit: int, after: Position | None = None) -> list[StoredDeadLetter]:
        return self.dead_letter_page(reason, limit, after).rows

    def _with_status(self, rows: list[StoredDeadLetter]) -> list[StoredDeadLetter]:
        """`rows` with the status of their replay, looked up by id (a few granules of the outcomes)."""
        if not rows:
            return rows
        tried = self.run(Query(BY_IDS, {"ids": [row.dead_letter_id for row in rows]}))
        status = {str(key): "replayed" if int(str(replayed)) else "failed" for key, replayed in tried}
        return [row._replace(status=status.get(row.dead_letter_id, "pending")) for row in rows]

    def dead_letter_statuses(self) -> dict[str, int]:
        """Stored dead letters by replay status (pending, failed, replayed), each letter once."""
        return {str(status): int(str(n)) for status, n in self.run(Query(COUNTS, {}))}

    def count_events(self) -> int:
        """Events as users see them: each id once, eventpipe's own probes left out."""
        counts = self._rollup.event_types(EventFilter())
        return sum(counts.values()) if counts is not None else self._scalar(count_query())

    def count_dead_letters(self) -> int:
        return self._scalar(Query("SELECT count() FROM dead_letters FINAL", {}))

    def dead_letter_reasons(self) -> dict[str, int]:
        rows = self.run(Query("SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason", {}))
        return {str(reason): int(str(count)) for reason, count in rows}

    def run(
        self, query: Query, binary: tuple[str, ...] = (), *, bounded: bool = False, ends: float | None = None
    ) -> list[tuple[object, ...]]:
        """Run `query`, within the memory bound; columns named in `binary` come back as bytes, undecoded.
        `bounded`: within the time bound too (store.bound), and past either it raises CostlyQueryError (422
        too_costly); `ends` (time.monotonic()): within what is left of the time, for a read of several
        queries. A read that is not bounded leaves past the memory bound as HeavyReadError (503 busy), and out
        of the server's time (a profile's max_execution_time) as the retryable error it is (503 unavailable):
        its client has no window to narrow."""
        formats: dict[str, str | dict[str, str]] | None = dict.fromkeys(binary, "bytes") if binary else None
        try:
            with classified(), self._pool.client(CALLER.get()) as client:
                # Once the lane is had: a wait for it counts against the bound too.
                settings = READ_SETTINGS | self._bound.settings(ends) if bounded else self._unbounded
                result = client.query(query.sql, parameters=query.parameters, column_formats=formats, settings=settings)
                return [tuple(row) for row in result.result_rows]
        except StorageError as exc:
            passed = self._bound.passed(exc, narrowable=bounded)
            if passed is None:
                raise
            raise passed from exc

    def bounded(self, query: Query) -> list[tuple[object, ...]]:
        return self.run(query, bounded=True)

    def _scalar(self, query: Query) -> int:
        return int(str(self.run(query)[0][0]))

    def _extent(self, query: Query, bounded: bool = False, ends: float | None = None) -> Extent:
        candidates, kept, end = self.run(query, bounded=bounded, ends=ends)[0]
        # (time, id) or, for events, (time, id, type): where the last row kept is.
        time_ms, last_id, *tie = end if isinstance(end, tuple) else (0, "")
        last = Position(int(str(time_ms)), str(last_id), str(tie[0]) if tie else None) if int(str(kept)) else None
        return Extent(int(str(candidates)), int(str(kept)), last)
