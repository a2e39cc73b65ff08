"""The batch writer: column-oriented inserts of events and dead letters."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext

from eventpipe.errors import (
    HaltStorageError,
    RejectedDataError,
    RetryableStorageError,
    StorageError,
    UnknownStorageError,
)
from eventpipe.events import PROBE_EVENT_TYPE, Event, Rejection
from eventpipe.store.copy import Tail, first_copies
from eventpipe.store.failure import classified
from eventpipe.store.mark import LAST_MARK
from eventpipe.store.query import bound_bytes, parameter_chunks
from eventpipe.store.schema.event import FIRST_COPY_BASE

# Rows an unrecognised error may dead-letter in one write; beyond it, it is not poison.
MAX_POISON_ROWS = 8
# The id (and user) of the rows Writer.takes_writes inserts: of the probe type, so no read shows them.
CANARY_ID = "eventpipe-canary"
EVENT_COLUMNS = ("event_id", "event_type", "timestamp", "received_at", "user_id", "topic", "properties")
# An Event's fields that are columns, in EVENT_COLUMNS order: the rest (Event.undated) guide the writer.
STORED = len(EVENT_COLUMNS)
DEAD_LETTER_COLUMNS = ("dead_letter_id", "received_at", "topic", "reason", "detail", "payload", "payload_size")
# Explicit, because ClickHouse 26.2+ defaults async_insert on, and an async
# insert returns before the rows are durable: acking then could lose them.
# A backfill may span more than 100 months in one batch; the default limit
# would refuse that block with TOO_MANY_PARTS (252), a code that otherwise
# means "retry later", and the batch would never go through.
INSERT_SETTINGS = {"async_insert": 0, "throw_on_max_partitions_per_insert_block": 0}
# A batch of this many rows or more (a backlog drained, `bench fill`) feeds the views of its table
# (events_by_user, arrivals, event_ids, undated_events) each on a thread of its own, not one after another:
# such an insert used one core of two. Every view still has the whole block before the insert returns.
# In one process, each size in turn with and without it: 20,000 rows 151 -> 128 ms, 250,000 rows 1.17 ->
# 1.02 s. Not for the small batches of a live stream: alone they gained too (1,000 rows 55 -> 47 ms), but
# under `eventpipe bench`'s 2,000 msg/s the publish -> queryable p50 and p99 rose 6 to 14 ms in three runs
# of three, the threads competing with the worker's own.
PARALLEL_VIEWS_ROWS = 10_000
BULK_INSERT_SETTINGS = {**INSERT_SETTINGS, "parallel_view_processing": 1}
UNDATED_COLUMNS = ("event_type", "event_id", "timestamp", "first_copy")
# The first copy's time of events stored without their own timestamp, by id.
UNDATED_LOOKUP = (
    "SELECT event_type, event_id, toUnixTimestamp64Milli(argMax(timestamp, first_copy)) FROM undated_events"
    " WHERE event_id IN {ids:Array(String)} GROUP BY event_type, event_id"
)


class Mark(NamedTuple):
    """A worker's mark (ingest.mark), a row of worker_marks: the fields are its columns, in order.
    `written` orders one worker's marks."""

    worker: str
    complete_before: int
    retired: bool
    written: int


# One process's writers (the worker's and the API's replay, in `eventpipe up`) look first times up and
# record them one at a time: side by side, each found none and stamped its own, and both copies of an
# undated event showed. Held for the lookup and the record only, not the insert. Writers of other
# processes still race (docs/architecture.md, "Copies").
UNDATED = threading.Lock()


class Writer:
    """Writes whole batches; a refused batch is bisected to the rows that cause it."""

    def __init__(self, client: Client) -> None:
        self._client = client
        # One insert context per table, made on first use: without it every
        # insert first asks the server for the table's column types (a
        # DESCRIBE round trip per batch). Dropped on any failure, so a schema
        # that changed under a running worker is read again.
        self._contexts: dict[tuple[str, bool], InsertContext] = {}
        # What this writer stored last, so that copies of it in the next batch are left out.
        self._tail = Tail()

    def takes_writes(self) -> bool:
        return self._canary_failure() is None

    def _canary_failure(self) -> StorageError | None:
        """True when `events` takes a known-good row: a probe-typed canary, which no read shows.

        What tells a poison row from a store that refuses every row: a server that
        answers a query may still fail each insert (a read-only or full disk, a
        constraint every row breaks), and a row alone in its batch failing so was
        dead-lettered as poison ("Read-only file system", 1001, in an attack)."""
        now = time.time_ns() // 1_000_000
        # Stamped with the day, so one row a day is kept whatever the retries; with a user, so the
        # views that copy users' rows (events_by_user) take it too.
        canary = Event(CANARY_ID, PROBE_EVENT_TYPE, now - now % 86_400_000, now, CANARY_ID, "", "{}")
        try:
            self._insert("events", EVENT_COLUMNS, list(zip(canary[:STORED])))
        except StorageError as exc:
            return exc
        return None

    def insert_events(self, events: Sequence[Event], *, isolate_unknown: bool = False) -> list[tuple[int, str]]:
        """Insert `events`; return (index, reason) of rows the table refuses.

        Raises RetryableStorageError or HaltStorageError when nothing can be
        said about the rows: then nothing of this batch may be acknowledged.
        With `isolate_unknown`, unrecognised errors are bisected like refusals,
        and a single row failing so counts as refused only while the server
        still answers (else it is an outage, and the error is raised).
        """
        with UNDATED:
            events = self._first_times(events)
            kept, first_of = first_copies(events)
            kept = self._tail.unstored(events, kept)
            unique = [events[i] for i in kept]
            self._record_undated(unique)
        refused: list[tuple[int, str]] = []
        unknown: list[int] = []
        # The canary, asked once per batch, when a row is first refused alone.
        canary = functools.cache(self._canary_failure)
        self._insert_isolating(list(range(len(unique))), unique, refused, unknown if isolate_unknown else None, canary)
        gone = {index for index, _reason in refused}
        self._tail.remember([event for index, event in enumerate(unique) if index not in gone] if gone else unique)
        # A copy left out shares its first copy's fate: refused with it, or stored as it (also by an
        # earlier batch, for a copy Tail.unstored leaves out).
        reasons = {kept[index]: reason for index, reason in refused}
        return [(index, reasons[first]) for index, first in enumerate(first_of) if first in reasons]

    def insert_event_columns(self, columns: Sequence[Sequence[object]]) -> None:
        """Insert rows given column by column, in EVENT_COLUMNS order, as the worker's batches go in.

        For bulk loads of new events (`eventpipe bench fill`): no copy lookup
        and no bisection, so a refusal fails the whole call.
        """
        self._insert("events", EVENT_COLUMNS, list(columns))

    def _first_times(self, events: Sequence[Event]) -> Sequence[Event]:
        """`events`, each copy of an event without its own timestamp given the first copy's time.

        Such an event is stamped with its receive time (timestamp equal to
        received_at), which differs between copies; the sort key holds the
        timestamp, so a copy with its own stamp would be a second row. The
        first copy's time is looked up among those stored (undated_events) and,
        failing that, taken from the first copy in this batch.
        """
        undated = {event.event_id for event in events if event.undated}
        if not undated:
            return events
        rows: list[Sequence[object]] = []
        with classified():
            for ids in parameter_chunks(sorted(undated), bound_bytes):
                rows += self._client.query(UNDATED_LOOKUP, parameters={"ids": ids}).result_rows
        first = {(str(kind), str(event_id)): int(str(millis)) for kind, event_id, millis in rows}
        out = []
        for event in events:
            if event.undated:
                millis = first.setdefault((event.event_type, event.event_id), event.timestamp_ms)
                if millis != event.timestamp_ms:
                    event = event._replace(timestamp_ms=millis)
            out.append(event)
        return out

    def _record_undated(self, events: Sequence[Event]) -> None:
        """Record the first copies of events without a timestamp in undated_events, before events holds them.

        First, and not through a view on events: a view writes after the
        events part is committed, so a worker killed in between left events
        whose copies, redelivered, found no first time and were stored again
        (177 rows in one kill -9 test run). Recorded first, a redelivery always
        finds the time, even for a batch that never reached events.
        """
        first = [event for event in events if event.undated]
        if first:
            columns: list[list[object]] = [
                [event.event_type for event in first],
                [event.event_id for event in first],
                [event.timestamp_ms for event in first],
                [FIRST_COPY_BASE - event.received_ms for event in first],
            ]
            self._insert("undated_events", UNDATED_COLUMNS, columns)

    def insert_marks(self, marks: Sequence[Mark]) -> None:
        """Store workers' marks in worker_marks, in an insert of their own (migration 14)."""
        if marks:
            self._insert("worker_marks", Mark._fields, list(zip(*marks, strict=True)))

    def server_time_ms(self) -> int:
        """The ClickHouse server's clock, epoch milliseconds: what it judges retention by."""
        with classified():
            return int(str(self._client.query("SELECT toUnixTimestamp64Milli(now64(3))").result_rows[0][0]))

    def last_mark(self, worker: str) -> tuple[int, int] | None:
        """The newest mark named `worker`: when it was stored (epoch ms) and its complete_before; None if none."""
        with classified():
            written, value, count = self._client.query(LAST_MARK, parameters={"worker": worker}).result_rows[0]
        return (int(str(written)), int(str(value))) if int(str(count)) else None

    def insert_dead_letters(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        rows = [
            (r.dead_letter_id, r.received_ms, r.topic, str(r.reason), r.detail, r.payload, r.payload_size)
            for r in rejections
        ]
        self._insert("dead_letters", DEAD_LETTER_COLUMNS, list(zip(*rows, strict=True)))

    def _insert_isolating(
        self,
        indexes: list[int],
        events: Sequence[Event],
        refused: list[tuple[int, str]],
        unknown: list[int] | None,
        canary: Callable[[], StorageError | None],
    ) -> None:
        """Insert the rows at `indexes`, halving refused blocks down to single rows.

        `unknown` is None unless unrecognised errors are to be isolated too; then
        it collects the rows refused that way. `canary` is the batch's known-good row's failure, or None.
        """
        if not indexes:
            return
        columns = list(itertools.islice(zip(*(events[i] for i in indexes), strict=True), STORED))
        try:
            self._insert("events", EVENT_COLUMNS, columns)
        except (RejectedDataError, UnknownStorageError) as exc:
            is_unknown = isinstance(exc, UnknownStorageError)
            if is_unknown and unknown is None:
                raise
            if len(indexes) == 1:
                if is_unknown and unknown is not None:
                    if not self.takes_writes():
                        raise  # the store refuses any row (or went away): not a poison row
                    unknown.append(indexes[0])
                    if len(unknown) > max(MAX_POISON_ROWS, 1) or (len(events) > 1 and len(unknown) == len(events)):
                        # Poison is a row or two; many rows failing alone is a
                        # server or setup problem, and dead-lettering them would
                        # bury good data. Stop bisecting and let it retry.
                        raise UnknownStorageError(
                            f"{len(unknown)} rows of {len(events)} fail on their own: not a poison row; {exc}"
                        ) from exc
                failure = None if is_unknown else canary()
                if isinstance(failure, RetryableStorageError):
                    # A passing problem (memory, parts, the network) met by the canary: retried, no halt.
                    raise failure from exc
                if failure is not None:
                    # A refusal every row meets (a constraint, a column's type changed under the
                    # worker) is the store's problem: dead-lettering the stream would bury it all.
                    raise HaltStorageError(
                        f"ClickHouse refuses a known-good row too, so no row of the batch is to blame: {exc}"
                    ) from exc
                refused.append((indexes[0], str(exc)))
                return
            middle = len(indexes) // 2
            self._insert_isolating(indexes[:middle], events, refused, unknown, canary)
            self._insert_isolating(indexes[middle:], events, refused, unknown, canary)

    def _insert(self, table: str, column_names: Sequence[str], columns: Sequence[Sequence[object]]) -> None:
        bulk = bool(columns) and len(columns[0]) >= PARALLEL_VIEWS_ROWS
        with classified():
            context = self._contexts.pop((table, bulk), None)
            if context is None:
                context = self._client.create_insert_context(
                    table,
                    column_names,
                    column_oriented=True,
                    settings=BULK_INSERT_SETTINGS if bulk else INSERT_SETTINGS,
                )
            self._client.insert(data=columns, context=context)
            self._contexts[table, bulk] = context  # kept only after a success
