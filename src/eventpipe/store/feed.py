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
and sizes, cut at PAGE_BYTES), then the first copy of each, found by key among
all parts. Reading in the sort key's order, ClickHouse stops once it has enough.

complete_until comes from the workers' marks (worker_marks): read before an
epoch's hi is taken, the newest mark of each worker says that everything it
received before that instant was committed before the mark, so below hi.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    event_conditions,
    parameter_chunks,
)
from eventpipe.store.reader import event_row
from eventpipe.store.schema.record import NEWEST

Run = Callable[[Query], list[tuple[object, ...]]]

# Parts of `arrivals` as the page relies on them: their block ranges say which
# epoch numbers they hold, their time range bounds the keys of those rows.
# With them, the store's generation: the id of its newest restore, 0 before any (store.schema.record.RESTORES),
# in the same query, so a page costs no round trip more (the generation alone when there is no part).
GENERATION = f"SELECT argMax(restore_id, {NEWEST}) FROM restores"  # noqa: S608 - constants
PARTS_QUERY = Query(
    "SELECT name, min_block_number, max_block_number, toUnixTimestamp(min_time), (" + GENERATION + ")"  # noqa: S608
    " FROM system.parts WHERE database = currentDatabase() AND table = 'arrivals' AND active",
    {},
)
GENERATION_QUERY = Query(GENERATION, {})
# The newest mark of each worker, and the server's clock for workers that have none yet.
MARKS_QUERY = Query(
    "SELECT toUnixTimestamp64Milli(now64(3)), groupArray((complete_before, retired)) FROM"
    " (SELECT argMax(complete_before, written) AS complete_before, argMax(retired, written) AS retired"
    " FROM worker_marks GROUP BY worker)",
    {},
)


def complete_before(marks: Sequence[object]) -> int:
    """From MARKS_QUERY's row: the instant before which every live worker committed all it received."""
    now_ms, newest = marks
    before = int(str(now_ms))
    for committed, retired in newest:  # type: ignore[attr-defined]
        if not int(str(retired)):
            before = min(before, int(str(committed)))
    return before


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


class FeedRewound(Exception):
    """The store numbers below where the client is: it was restored (its derived tables
    rebuilt, migration.DERIVED) since the client's place was taken. Serving on would skip."""


class Part(NamedTuple):
    name: str
    min_block: int
    max_block: int
    min_time_s: int


class Feed:
    """Pages of the arrival feed, read through `run` (a Reader's)."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def page(self, where: EventFilter, limit: int, place: Place, max_bytes: int = PAGE_BYTES) -> FeedPage:
        """Up to `limit` events after `place` that `where` admits, whose JSON fits in `max_bytes` (at least one)."""
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
        if max((p.max_block for p in parts), default=0) < place.hi:
            raise FeedRewound(f"arrivals numbers below {place.hi} now")
        # Rows of the epoch are in parts that hold its numbers; their time ranges bound the rows' keys.
        epoch = [p for p in parts if p.max_block > place.lo and p.min_block <= place.hi]
        if not epoch:
            return self._finish(place, [])
        since_ms = min(p.min_time_s for p in epoch) * 1000
        # Naming parts costs a string split per row read; worth it only when some part can be skipped.
        prune = len(epoch) < len(parts)
        sizes = self._run(_candidates(where, place, since_ms, limit, sized=True, prune=prune))
        kept = _fitting([int(str(row[-1])) for row in sizes], max_bytes)
        # Two copies of an event in the epoch are two candidates with one key: looked up once, or
        # a chunk boundary between them would serve the event twice. Sorted, so once in order.
        keys = list(dict.fromkeys((int(str(ms)), str(kind), str(eid)) for ms, kind, eid, _ in sizes[:kept]))
        # In key order chunk after chunk, so the rows stay in key order.
        rows = [
            row for chunk in parameter_chunks(keys, _key_bytes) for row in self._run(_first_copies(where, place, chunk))
        ]
        events = [_event(row) for row in rows if row[-1]]
        if len(sizes) < limit and kept == len(sizes):
            return self._finish(place, events)
        # The last candidate's key, read or not: an event erased between the two reads is passed over.
        after = Key(*keys[-1])
        return FeedPage(events, place._replace(after=after), place.served_before_ms)

    def _begin(self, place: Place, parts: list[Part], before: int) -> Place:
        """Start the epoch after `lo`: its complete_until from the marks (`before`), then its hi from
        `parts`, listed after the marks were read, which the epoch's first page reads."""
        hi = max((p.max_block for p in parts), default=0)
        if hi < place.lo:
            raise FeedRewound(f"arrivals numbers below {place.lo} now")
        return place._replace(hi=hi, epoch_before_ms=before, after=None)

    def _finish(self, place: Place, events: list[Event]) -> FeedPage:
        """The last page of the epoch: the next one starts after its hi."""
        assert place.hi is not None
        nxt = Place(lo=place.hi, served_before_ms=place.epoch_before_ms, generation=place.generation)
        return FeedPage(events, nxt, place.epoch_before_ms)

    def _parts(self) -> tuple[list[Part], int]:
        rows = self._run(PARTS_QUERY)
        generation = int(str((rows or self._run(GENERATION_QUERY))[0][-1]))
        return [Part(str(n), int(str(lo)), int(str(hi)), int(str(t))) for n, lo, hi, t, _ in rows], generation


def _fitting(sizes: list[int], max_bytes: int) -> int:
    """How many rows from the start fit in `max_bytes`: at least one, so a page always moves on."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > max_bytes and count:
            return count
    return len(sizes)


def _candidates(
    where: EventFilter, place: Place, since_ms: int, limit: int, sized: bool = False, prune: bool = True
) -> Query:
    """The first `limit` rows of the epoch after the place, in key order: copies whose number is in
    (lo, hi], so every event whose first copy is there has at least one row among them."""
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
        "timestamp >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')",
    ]
    parameters |= {"lo": place.lo, "hi": place.hi, "since_ms": since_ms, "limit": limit}
    after_key(conditions, parameters, place.after)
    fields = f"toUnixTimestamp64Milli(timestamp), event_type, event_id, {EVENT_BYTES} AS size" if sized else SORT_KEY
    sql = (
        f"SELECT {fields} FROM arrivals WHERE {' AND '.join(conditions)}"  # noqa: S608 - constant fragments
        f" ORDER BY {SORT_KEY} LIMIT {{limit:UInt32}}"
    )
    return Query(sql, parameters)


# The candidates' keys, bound as one parameter: the set the first copies are looked up by, without
# reading the candidates a second time (a subquery here doubled a new client's first page at 100M).
KEY_SET = (
    "SELECT fromUnixTimestamp64Milli(key.1, 'UTC'), key.2, key.3"
    " FROM (SELECT arrayJoin({keys:Array(Tuple(Int64, String, String))}) AS key)"
)


def _key_bytes(key: tuple[int, str, str]) -> int:
    return len(key[1].encode()) + len(key[2].encode()) + 32


def _first_copies(where: EventFilter, place: Place, keys: list[tuple[int, str, str]]) -> Query:
    """For each candidate's key (time in ms, type, id), its first copy (lowest number) over all parts,
    and whether to serve it: its first number is in this epoch and the copy passes the filter."""
    conditions, parameters = event_conditions(where)
    # Each key's lowest number first, from the key and number columns alone; then the rest of that
    # copy only (the outer filter is in PREWHERE, and its key columns select the granules; LIMIT BY
    # keeps one of copies sharing that number, which one unspecified as before). Sorting
    # every copy whole to keep one made a key re-sent 1,500 times with 60 KB of properties cost a
    # caught-up client's next poll 279 MiB, and copies never collapse in `arrivals`.
    lowest = (
        f"SELECT {SORT_KEY}, min(_block_number) FROM arrivals"  # noqa: S608 - constant fragments
        f" WHERE ({SORT_KEY}) IN ({KEY_SET}) GROUP BY {SORT_KEY}"
    )
    first = (
        "SELECT event_id, event_type, timestamp, received_at, user_id, topic, properties, _block_number AS first"  # noqa: S608 - constant fragments
        f" FROM arrivals PREWHERE ({SORT_KEY}, _block_number) IN ({lowest}) LIMIT 1 BY {SORT_KEY}"
    )
    keep = " AND ".join(["first > {lo:UInt64}", *conditions])
    # Not in the sort key's order: that opens a stream per part for a handful of rows (27 MiB over
    # 800 unmerged parts of one key's copies, 3 MiB without).
    sql = (
        f"SELECT {EVENT_FIELDS}, {keep} AS keep FROM ({first}) ORDER BY {SORT_KEY}"  # noqa: S608 - constant fragments
        " SETTINGS optimize_read_in_order = 0"
    )
    return Query(sql, parameters | {"lo": place.lo, "keys": keys})


def _event(row: tuple[object, ...]) -> Event:
    return event_row(row[:-1])  # the last column says which copy is kept
