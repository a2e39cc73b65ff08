"""The arrival feed: every stored event once, in the order the store committed it, resumable from a token.

Positions are ClickHouse block numbers of `arrivals` (migration 9): a
non-replicated MergeTree takes a part's number and makes the part visible
under one lock, so once a part is visible every part with a lower number is
visible too, and no part can later appear below it. `arrivals` keeps every
copy of every event (it collapses nothing) and each row keeps its part's
number through merges, so an event's first position, the lowest number among
its copies, is fixed from the moment the event is visible.

A client walks epochs. An epoch is a range of numbers (lo, hi], where hi is the
highest number when the epoch began; it serves, in key order (timestamp,
type, id), every event whose first position falls in it. Everything up to
`lo` was served by earlier epochs, a part committed later gets a number above
`hi` and goes to a later epoch, and a redelivered copy of an event served
before has a first position at or below `lo`: it is left out. So each event
comes exactly once, however late it was committed and however old its own
timestamp.

A page reads only the parts whose block range meets its epoch (chosen by part
name inside the query, so a merge cannot race it), from the lowest time those
parts hold and from its cursor on, in key order: the candidates first (keys
and sizes, cut at PAGE_BYTES, read in windows of time sized from the parts,
store.window), then the first copy of each, found by key among all parts (store.epoch).
Reading in the sort key's order, ClickHouse stops once it has enough.

complete_until comes from the workers' marks (worker_marks): read before an
epoch's hi is taken, the newest mark of each worker says that everything it
received before that instant was committed before the mark, so below hi.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from eventpipe.errors import EventpipeError
from eventpipe.events import Event
from eventpipe.store.epoch import candidates, first_copies
from eventpipe.store.mark import MARKS_QUERY, complete_before
from eventpipe.store.query import PAGE_BYTES, EventFilter, Key, Query
from eventpipe.store.row import event_row
from eventpipe.store.schema.record import NEWEST
from eventpipe.store.window import Span, Windows, in_ms

Run = Callable[[Query], list[tuple[object, ...]]]

# A page's candidates are read in windows of time holding about this many pages' rows of the
# epoch (estimated from its parts), and at least WINDOW_ROWS: room for rows the filter leaves out
# or the estimate misses. A window only bounds which parts and granules are read (LIMIT stops
# the read in key order), so a wide one costs an unfiltered page nothing; each window short of
# the page is a query more (5 to 10 ms), so the next is WINDOW_GROWTH times as wide.
WINDOW_PAGES = 2
WINDOW_ROWS = 20_000
WINDOW_GROWTH = 16
# The widest window (estimated rows): a filter that keeps nothing made one page read the whole epoch, the
# whole store for a new client, in windows ending in one of tens of millions of rows, and no bound cut it
# (10.3M events, 20 property conditions: 10.8 s, where /events gave 422 after its 10 s; minutes at 100M).
# Windows this wide cost one query each (5 to 10 ms) beside reading their rows, and let a page stop soon
# after its time is spent (Feed's budget_s).
MAX_WINDOW_ROWS = 1_000_000
# Rounds of candidates read for one page before it is answered empty while its epoch goes on.
EMPTY_ROUNDS = 4

# Parts of `arrivals` as the page relies on them: their block ranges say which
# epoch numbers they hold, their time range bounds the keys of those rows.
# With them, the store's generation: the id of its newest finished restore, 0 before any
# (store.schema.record.RESTORES), in the same query, so a page costs no round trip more (the generation alone
# when there is no part). Finished only: a restore killed before its drop left the store as it was, and its
# row turned every partner's token away for nothing.
GENERATION = f"SELECT argMaxIf(restore_id, {NEWEST}, finished) FROM restores"  # noqa: S608 - constants
PART_FIELDS = "name, min_block_number, max_block_number, toUnixTimestamp(min_time), toUnixTimestamp(max_time), rows"
PARTS_QUERY = Query(
    f"SELECT {PART_FIELDS}, ({GENERATION}) FROM system.parts"  # noqa: S608 - constants
    " WHERE database = currentDatabase() AND table = 'arrivals' AND active",
    {},
)
GENERATION_QUERY = Query(GENERATION, {})


class Place(NamedTuple):
    """Where a client is: every event whose first position is at most `lo` was served,
    and of the epoch (lo, hi] those up to `after`. `hi` is None between epochs.
    `served_before_ms` is complete_until once `lo` is served, `epoch_before_ms` once `hi` is."""

    lo: int = 0
    hi: int | None = None
    served_before_ms: int = 0
    epoch_before_ms: int = 0
    after: Key | None = None
    # The store's generation when the client started: a restore since makes the place meaningless.
    generation: int = 0


class FeedPage(NamedTuple):
    rows: list[Event]
    next: Place
    complete_until_ms: int


class FeedRewound(EventpipeError):
    """The store was restored (its derived tables rebuilt, migration.DERIVED, numbered afresh) since the
    client's place was taken: its generation changed. Serving on would skip. A migration that rebuilds
    `arrivals` must change the generation too: numbers alone cannot tell a rebuild from expired parts."""


class Part(NamedTuple):
    name: str
    min_block: int
    max_block: int
    min_time_s: int
    max_time_s: int
    rows: int


class Feed:
    """Pages of the arrival feed, read through `run` (a Reader's). `budget_s`: how long a page reads
    windows of candidates before it answers with those found so far (none, when the filter kept none),
    its place then at the end of the last window read, so the next page goes on from there; None: no
    bound. Not a cut: each page moves on, so even a filter that keeps nothing reaches the end."""

    def __init__(self, run: Run, budget_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._run = run
        self._budget_s = budget_s
        self._clock = clock

    def page(self, where: EventFilter, limit: int, place: Place, max_bytes: int = PAGE_BYTES) -> FeedPage:
        """Up to `limit` events after `place` that `where` admits, whose JSON fits in `max_bytes` (at least one)."""
        # One budget for the page, also when it goes on into the next epoch.
        ends = None if self._budget_s is None else self._clock() + self._budget_s
        answer = self._epoch_page(where, limit, place, max_bytes, ends)
        if not answer.rows and place.hi is not None and answer.next.hi is None:
            # An epoch begun by an earlier page ran out here: its last page was exactly full, or what was
            # left served nothing (copies). Empty, this page would tell the client it is caught up while
            # what was committed since waits in the next epoch: that one is begun and read now.
            return self._epoch_page(where, limit, answer.next, max_bytes, ends)
        return answer

    def _epoch_page(self, where: EventFilter, limit: int, place: Place, max_bytes: int, ends: float | None) -> FeedPage:
        """A page of the epoch `place` is in, or of a new one begun after `place.lo` when it is between."""
        # An epoch's complete_until is read before its hi (the parts), as _begin says.
        before = complete_before(self._run(MARKS_QUERY)[0]) if place.hi is None else None
        parts, generation = self._parts()
        if place == Place():
            place = place._replace(generation=generation)
        elif place.generation != generation:
            raise FeedRewound(f"restored since: generation {place.generation}, now {generation}")
        if before is not None:
            place = self._begin(place, parts, before)
        assert place.hi is not None
        hi, top = place.hi, max((p.max_block for p in parts), default=0)
        if top < hi:
            # Retention merged the highest-numbered part empty (a backfill's, in an old partition) and
            # ClickHouse removed it: nothing numbered above `top` is left to serve. It was a 422 "restored:
            # start again" until the next insert, for a sync that had missed nothing.
            hi = max(top, place.lo)
            place = place._replace(hi=hi)
        # Rows of the epoch are in parts that hold its numbers; their time ranges bound the rows' keys. A
        # part retention emptied, until ClickHouse removes it, has none, and its time range starts in 1970.
        filled = [p for p in parts if p.rows]
        epoch = [p for p in filled if p.max_block > place.lo and p.min_block <= hi]
        if not epoch:
            return self._finish(place, [])
        since_ms = min(p.min_time_s for p in epoch) * 1000
        spans = [in_ms(p.min_time_s, p.max_time_s, p.rows) for p in epoch]
        # Naming parts costs a string split per row read; worth it only when some part can be skipped.
        prune = len(epoch) < len(filled)
        # A round's candidates may all be copies of events served before (a producer re-sent them)
        # or fail the filter where their first copy does not: an empty page, which tells a client it is
        # caught up. So a few rounds are read before one is answered empty.
        for _ in range(EMPTY_ROUNDS):
            sizes, resume_ms = self._sizes(where, place, spans, since_ms, limit, prune, ends)
            if not sizes:
                if resume_ms is None:
                    return self._finish(place, [])
                # Out of time with nothing found before resume_ms: an empty page that is not the end (as
                # after EMPTY_ROUNDS), its place past every row before resume_ms (the resume mark, Key.resume).
                return FeedPage([], place._replace(after=Key.resume(resume_ms)), place.served_before_ms)
            kept = _fitting([int(str(row[-1])) for row in sizes], max_bytes)
            # The last kept candidate's key, read or not: an event erased between the two reads is passed over.
            time_ms, event_type, event_id, _size = sizes[kept - 1]
            through = Key(int(str(time_ms)), str(event_type), str(event_id))
            rows = self._run(first_copies(where, place, since_ms, through, prune))
            served = _fitting([int(str(row[-1])) for row in rows], max_bytes)
            events = [_event(row) for row in rows[:served]]
            if served < len(rows):
                # The cut fell between copies of one event, and the copy served (its first) is larger than
                # the one counted: ties in key order come in no set order. The rest comes next page.
                return FeedPage(events, place._replace(after=Key.of(events[-1])), place.served_before_ms)
            if len(sizes) < limit and kept == len(sizes) and resume_ms is None:
                return self._finish(place, events)
            place = place._replace(after=through)
            if events or resume_ms is not None:
                break
        return FeedPage(events, place, place.served_before_ms)

    def _sizes(
        self,
        where: EventFilter,
        place: Place,
        spans: list[Span],
        since_ms: int,
        limit: int,
        prune: bool,
        ends: float | None,
    ) -> tuple[list[tuple[object, ...]], int | None]:
        """The first `limit` candidates after the place (key and size), fewer only when the epoch has
        no more, or when the clock passed `ends`: then also the time every row before which was read
        (else None). Read window by window of time: in the sort key's order a query reads a granule of
        every part it may take rows from before LIMIT stops it, so one over the whole epoch read
        every part of the store for a new client's first page (37.5 ms at 100M, 10.7 in a window)."""
        start = max(since_ms, place.after.time_ms) if place.after else since_ms
        rows: list[tuple[object, ...]] = []
        reach = max(WINDOW_PAGES * limit, WINDOW_ROWS)
        while True:
            end = Windows(spans, reach).end(start)
            rows += self._run(candidates(where, place, start, limit - len(rows), prune, end))
            if len(rows) >= limit or end is None:
                return rows, None
            if ends is not None and self._clock() >= ends:
                return rows, end
            # Every row before `end` was read: the next window starts there, much wider in case the
            # filter keeps few rows, up to MAX_WINDOW_ROWS.
            start, place = end, place._replace(after=None)
            reach = min(reach * WINDOW_GROWTH, max(MAX_WINDOW_ROWS, reach))

    def _begin(self, place: Place, parts: list[Part], before: int) -> Place:
        """Start the epoch after `lo`: its complete_until from the marks (`before`), then its hi from
        `parts`, listed after the marks were read, which the epoch's first page reads."""
        hi = max((p.max_block for p in parts), default=0)
        # Below `lo` only when the highest-numbered parts expired (see _epoch_page): every event numbered
        # up to `hi` was served, and what comes next is numbered above it.
        return place._replace(lo=min(place.lo, hi), hi=hi, epoch_before_ms=before, after=None)

    def _finish(self, place: Place, events: list[Event]) -> FeedPage:
        """The last page of the epoch: the next one starts after its hi."""
        assert place.hi is not None
        nxt = Place(lo=place.hi, served_before_ms=place.epoch_before_ms, generation=place.generation)
        return FeedPage(events, nxt, place.epoch_before_ms)

    def _parts(self) -> tuple[list[Part], int]:
        rows = self._run(PARTS_QUERY)
        generation = int(str((rows or self._run(GENERATION_QUERY))[0][-1]))
        parts = [Part(str(row[0]), *(int(str(value)) for value in row[1:6])) for row in rows]
        return parts, generation


def _fitting(sizes: list[int], max_bytes: int) -> int:
    """How many rows from the start fit in `max_bytes`: at least one, so a page always moves on."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > max_bytes and count:
            return count
    return len(sizes)


def _event(row: tuple[object, ...]) -> Event:
    return event_row(row[:-1])  # the last column is the copy's size
