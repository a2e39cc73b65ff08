"""`eventpipe bench fill`: append many realistic events to a data dir, fast, for the read benchmarks.

Through the worker's Writer (the same insert the worker does), not through
MQTT: 100M events over the broker would take hours and measure the ingest
again. Rows are demo events, parsed by the contract, then repeated with fresh
ids, about 100,000 users and timestamps spread evenly over the last 90 days,
oldest first, as a replay of 90 days of a web shop's traffic would arrive.
Streams in batches, so memory stays flat whatever the count. Prints one JSON
line.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import cycle, islice

from clickhouse_connect.driver.client import Client

from eventpipe.bench.backlog import demo_messages
from eventpipe.events import Event, Limits, parse
from eventpipe.process import interrupted_by
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer

TEMPLATES = 5_000
BATCH = 250_000
USERS = 100_000
SPAN_MS = 90 * 86_400_000
# Spreads consecutive rows over all users (a multiplier coprime to USERS).
USER_STRIDE = 7_919
# Batches inserted at once, each by a Writer of its own on a thread: a batch's rows are made and encoded
# in Python, holding the GIL, while the engine, which lets it go, stores the one before. One at a time,
# the fill used one core of two. At 5M events here: 1 in flight 232,773/s, 2 314,312/s, 3 275,597/s.
IN_FLIGHT = 2


def templates(now_ms: int) -> list[Event]:
    """The demo events the rows repeat, with fresh ids and times."""
    parsed = [parse(topic, payload, now_ms, Limits()) for topic, payload in demo_messages(TEMPLATES)]
    return [row for row in parsed if isinstance(row, Event)]


def id_tail() -> str:
    """The end of every id of one call, after the row's index: 18 random hex digits, so that ids never
    repeat across calls."""
    run = secrets.token_hex(9)
    return f"-4{run[:3]}-8{run[3:6]}-{run[6:18]}"


def batches(count: int, now_ms: int, batch: int = BATCH) -> Iterator[list[Sequence[object]]]:
    """`count` events as column lists (EVENT_COLUMNS order) of `batch` rows, oldest first, ids new on every call.

    Row `index` is the template (index + index // USERS) % templates, the user index * USER_STRIDE % USERS
    and the id `{index >> 16:08x}-{index & 0xFFFF:04x}` + the call's tail.
    Built column by column, from slices of lists made once per call, not row by row: at 100M rows the
    Python side is what limits the rate (it holds the GIL while the engine stores the batch before), and
    a batch of 250,000 took 0.23 s to make that way, 0.08 s so.
    """
    rows = templates(now_ms)
    types, topics, properties = ([getattr(row, name) for row in rows] for name in ("event_type", "topic", "properties"))
    tail = id_tail()
    # Every id's end, by its low 16 bits: one string concatenation a row instead of two formats.
    lows = [f"{low:04x}{tail}" for low in range(1 << 16)]
    # The users in the order consecutive rows take them.
    ring = [f"user-{index * USER_STRIDE % USERS:05d}" for index in range(USERS)]
    first = now_ms - SPAN_MS
    for start in range(0, count, batch):
        stop = min(count, start + batch)
        times = [first + index * SPAN_MS // count for index in range(start, stop)]
        ids: list[str] = []
        kinds: list[str] = []
        users: list[str] = []
        places: list[str] = []
        props: list[str] = []
        for high in range(start >> 16, ((stop - 1) >> 16) + 1):
            prefix, base = f"{high:08x}-", high << 16
            ids += [prefix + low for low in lows[max(start, base) - base : min(stop, base + (1 << 16)) - base]]
        index = start
        while index < stop:
            # A run of rows within one round of users, where the template advances with the row alone. One
            # template further at each round: USERS is a multiple of TEMPLATES, so index % len(rows) made
            # all of a user's events copies of one template (one type, one product, one amount).
            offset, template = index % USERS, (index + index // USERS) % len(rows)
            size = min(stop - index, USERS - offset)
            users += ring[offset : offset + size]
            for column, source in ((kinds, types), (places, topics), (props, properties)):
                column += islice(cycle(source), template, template + size)
            index += size
        yield [ids, kinds, times, [moment + 150 for moment in times], users, places, props]


def fill(dsn: str, count: int, retention_days: int = 0) -> dict[str, float]:
    """Append `count` events to the store at `dsn`, migrated as `eventpipe up` does with `retention_days`
    (0 would remove a retention TTL it set); return what it took."""
    client = connect(dsn)
    try:
        migrate(client, retention_days)
        started = time.perf_counter()
        stored = insert_all(client, batches(count, time.time_ns() // 1_000_000))
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return {"count": stored, "seconds": seconds, "per_second": stored / seconds if seconds else 0.0}


def insert_all(client: Client, columns: Iterator[list[Sequence[object]]]) -> int:
    """Insert every batch of `columns`, IN_FLIGHT at a time; return the rows stored.

    Interrupted (Ctrl-C, SIGTERM), or once it learns a batch failed, it makes no more batches, lets
    those begun end whole, and raises: a batch cut inside its insert left events_by_user short of
    `events`. A second batch failing meanwhile is told in a note on the error raised.
    """
    writers = [Writer(client) for _ in range(IN_FLIGHT)]
    # Every batch that may still be running, oldest first.
    begun: deque[Future[int]] = deque()
    stored = 0
    # The pool's own exit joins its threads once every insert has ended, so they are idle by then.
    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="fill") as pool:
        try:
            for number, batch in enumerate(columns):
                if len(begun) == IN_FLIGHT:
                    # Left in `begun` until its result is in: a signal while it is awaited must wait for it.
                    stored += begun[0].result()
                    begun.popleft()
                begun.append(pool.submit(_insert, writers[number % IN_FLIGHT], batch))
            stored += sum(future.result() for future in begun)
        except BaseException as exc:
            _end(begun)
            for other in begun:
                failure = None if other.cancelled() else other.exception()
                if failure is not None and failure is not exc:
                    exc.add_note(f"another batch failed too: {failure}")
            raise
    return stored


def _end(begun: Sequence[Future[int]]) -> None:
    """Cancel the batches not yet begun and wait for the others to end, whatever signals come meanwhile;
    raise KeyboardInterrupt after if one came.

    The inserts ran on the main thread before, where a signal waits for the engine call to return: a
    second Ctrl-C would otherwise cut the wait short, and the process could end inside an insert. On
    the futures, not the threads: a Thread.join a signal interrupts counts the thread as ended
    (Python 3.11), and a second join returned at once while its insert ran on.
    """
    for future in begun:
        future.cancel()
    interrupted = False
    while True:
        try:
            wait(begun)
        except KeyboardInterrupt:
            interrupted = True
        else:
            break
    if interrupted:
        raise KeyboardInterrupt


def _insert(writer: Writer, columns: list[Sequence[object]]) -> int:
    writer.insert_event_columns(columns)
    return len(columns[0])


def run_fill(dsn: str, count: int, retention_days: int) -> int:
    # SIGTERM killed the process inside an insert, which left events_by_user short of the batch `events`
    # took; as Ctrl-C's, its KeyboardInterrupt comes to the main thread, and insert_all lets the inserts
    # begun on the others end.
    with interrupted_by(signal.SIGTERM):
        figures = fill(dsn, count, retention_days)
    print(json.dumps(figures), flush=True)
    return 0
