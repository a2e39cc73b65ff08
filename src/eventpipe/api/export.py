"""GET /export: every event the filters of /events select, oldest first, as NDJSON or CSV, streamed.

The store walks the events a page at a time (store.export); each page becomes
one chunk of the answer, made only when the one before has been handed to
the server (api.stream), with the next page read meanwhile. So the API holds
about two pages whatever the export's size, a slow client holds no query open
in ClickHouse, a client that goes away stops the walk, and a failure midway
cuts the answer off.
"""

from __future__ import annotations

import contextvars
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from eventpipe.api.auth import Granted, KeyCheck
from eventpipe.api.error import KEYED, ApiError, responses
from eventpipe.api.filter import Where, conditions
from eventpipe.api.hangup import Hangup
from eventpipe.api.model import EXAMPLE_EVENT, event_text, rfc3339
from eventpipe.api.param import EventType, Since, Until, UserId, only_known, text, window
from eventpipe.api.slot import Slots
from eventpipe.api.stream import Stream
from eventpipe.errors import RevokedError
from eventpipe.events import Event
from eventpipe.events.timestamp import to_epoch_ms
from eventpipe.store.export import Export
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader

# Exports running at once in the process by default (EVENTPIPE_API_MAX_EXPORTS): on two cores more do
# not go faster, and each holds about two pages while its client reads (api.slot).
MAX_EXPORTS = 4
# Seconds a client refused an export is told to wait: an export of a day of a busy store takes a few.
EXPORT_RETRY_S = 10
CSV_HEADER = "event_id,event_type,timestamp,received_at,user_id,topic,properties\r\n"
MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8; header=present"}
# RFC 4180: a field holding a quote, a comma or a line break is quoted, its quotes doubled.
NEEDS_QUOTES = re.compile('[",\r\n]')
# What a spreadsheet opening the file runs as a formula (OWASP, CSV injection): producers
# choose ids, types and users, and `=HYPERLINK(...)` in one sent the sheet's cells away. Such a
# cell gets a leading ' and shows as text; ndjson keeps every value exactly.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Format = Annotated[
    Literal["ndjson", "csv"],
    Query(
        alias="format",
        description="`ndjson`: one event per line, as the items of `/events`. `csv`: a header line, then one "
        "event per line, `properties` as JSON text; a text field starting with =, +, -, @, a tab or a carriage "
        "return gets a leading ' so that a spreadsheet does not run it as a formula.",
        examples=["csv"],
    ),
]


# Each row encoded on its own, then the bytes joined: a page joined as one str and then encoded was
# held three times over, and, with one character above U+FFFF in one event, as 4 bytes for every
# character of the page (an 8 MiB page peaked at 62 MB).
def ndjson(page: list[Event]) -> bytes:
    return b"".join([(event_text(event) + "\n").encode() for event in page])


def csv(page: list[Event]) -> bytes:
    return b"".join([_csv_row(event).encode() for event in page])


def _csv_row(event: Event) -> str:
    # A null user_id is an empty field, an empty one a quoted empty string (as PostgreSQL's COPY writes them).
    user = "" if event.user_id is None else _field(event.user_id)
    return (
        f"{_field(event.event_id)},{_field(event.event_type)},{rfc3339(event.timestamp_ms)},"
        f"{rfc3339(event.received_ms)},{user},{_field(event.topic)},{_field(event.properties)}\r\n"
    )


def _field(value: str) -> str:
    """`value` as a CSV field a spreadsheet shows as text, never runs (`properties`, a JSON object, starts with {)."""
    if value.startswith(FORMULA_STARTS):
        value = "'" + value
    if value and NEEDS_QUOTES.search(value) is None:
        return value
    return '"' + value.replace('"', '""') + '"'


ENCODERS: dict[str, tuple[bytes, Callable[[list[Event]], bytes]]] = {
    "ndjson": (b"", ndjson),
    "csv": (CSV_HEADER.encode(), csv),
}


def _example(fmt: str) -> str:
    sample = {**EXAMPLE_EVENT, "properties": json.dumps(EXAMPLE_EVENT["properties"], separators=(",", ":"))}
    sample["timestamp_ms"], sample["received_ms"] = map(to_epoch_ms, (sample["timestamp"], sample["received_at"]))
    event = Event(**{field: sample[field] for field in Event._fields if field in sample})
    head, encode = ENCODERS[fmt]
    return (
        head + encode([event, event._replace(event_id="5f0e8a77-02c4-4f3b-b1de-7a4b1b2f4e01", user_id=None)])
    ).decode()


OPENAPI_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every matching event, oldest first (ties by type, then id), streamed with chunked "
        "encoding. An export that fails midway is cut off without the last chunk, which HTTP clients report "
        "as an error (curl exits 18); over HTTP/1.0, which has no chunks, the connection is reset (curl exits 56): "
        "an answer that ends cleanly is complete.",
        "content": {
            media.split(";")[0]: {"schema": {"type": "string"}, "example": _example(fmt)}
            for fmt, media in MEDIA_TYPES.items()
        },
        "headers": {
            "Content-Disposition": {
                "description": "A file name for the download.",
                "schema": {"type": "string", "example": 'attachment; filename="events-20261122T093000Z.csv"'},
            },
            "Cache-Control": {"description": "`no-store`.", "schema": {"type": "string"}},
        },
    }
}


def slots(max_exports: int = MAX_EXPORTS) -> Slots:
    """The exports that run at once: `max_exports`, half of them for one key."""
    return Slots(max_exports, max(1, max_exports // 2), "exports", "EVENTPIPE_API_MAX_EXPORTS", EXPORT_RETRY_S)


def router(reader: Reader, keys: KeyCheck, running: Slots) -> APIRouter:
    api = APIRouter(dependencies=[Depends(keys), Depends(only_known)], responses=responses(*KEYED))
    export = Export(reader.run)
    # The pages read ahead, one thread a running export: bounded with them, and reused, since the engine
    # keeps files open for each thread that has queried.
    ahead = ThreadPoolExecutor(running.total, thread_name_prefix="eventpipe-export")

    @api.get(
        "/export",
        tags=["events"],
        summary="Every matching event, oldest first, as NDJSON or CSV",
        description="The filters of `/events`, `where` included, without a row limit or pages: the whole answer "
        "is one stream. `since` and `until` filter on the event's own timestamp. A key limited to some event "
        "types exports those only. A few exports run at once (`EVENTPIPE_API_MAX_EXPORTS`, 4 by default, half "
        "of them per key): past a key's share, 429 `too_many_exports`; past the API's, 503 `busy`; both with "
        "`Retry-After`. A key removed from the keys file, or whose event types change, while its export runs has "
        "it cut off before the next page (at most 10,000 events or 8 MiB later).",
        status_code=200,
        response_class=Stream,
        responses=OPENAPI_200,
    )
    def export_events(
        grant: Granted,
        request: Request,
        export_format: Format = "ndjson",
        event_type: EventType = None,
        user_id: UserId = None,
        since: Since = None,
        until: Until = None,
        where: Where = None,
    ) -> Stream:
        only = EventFilter(text(event_type), text(user_id), *window(since, until), where=conditions(where))
        try:
            give_back = running.take(grant.name)
        except ApiError:
            keys.uncount(grant)  # refused: not one of the key's requests per minute
            raise
        stopped = threading.Event()
        try:
            pages = export.pages(grant.narrow(only), stopped=stopped)
            # The first page is read before the answer starts, so a ClickHouse that
            # does not answer gets its 503 (or 500) as on any route; a client that leaves
            # meanwhile stops the walk at its next window (api.hangup).
            with Hangup(request.receive, stopped):
                first = next(pages, [])
        except BaseException:
            give_back()
            raise
        head, encode = ENCODERS[export_format]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers = {
            "Content-Disposition": f'attachment; filename="events-{stamp}.{export_format}"',
            "Cache-Control": "no-store",
        }
        reading = Reading(ahead, chain([first], pages), stopped, give_back, keys.still_granted(request))
        chunks = reading.chunks(head, encode)
        return Stream(chunks, MEDIA_TYPES[export_format], headers, "export", reading.end, reading.stop)

    return api


class Reading:
    """One export's pages, the next read on a thread of the shared pool while this one is sent, each
    sent only while `granted` says its key still may have it, and its slot, given back once the answer
    has ended and that thread has let go of the walk."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        pages: Iterator[list[Event]],
        stopped: threading.Event,
        give_back: Callable[[], None],
        granted: Callable[[], bool],
    ) -> None:
        self._pool, self._pages, self._stopped, self._give_back = pool, pages, stopped, give_back
        self._granted = granted
        self._ahead: Future[list[Event] | None] | None = None

    def _read_ahead(self) -> Future[list[Event] | None]:
        # In a copy of this request's context: an executor's thread has none of its own, and its reads
        # would run as no key's (store.reader.CALLER), outside the key's lane.
        return self._pool.submit(contextvars.copy_context().run, self._next_page)

    def _next_page(self) -> list[Event] | None:
        return next(self._pages, None)

    def chunks(self, head: bytes, encode: Callable[[list[Event]], bytes]) -> Iterator[bytes]:
        """One chunk a page: the engine (chDB runs without the GIL) reads the next page while
        Python formats this one. One page ahead at most, and only while the client takes what
        it is sent."""
        self._ahead = self._read_ahead()
        try:
            while (page := self._ahead.result()) is not None:
                if not self._granted():
                    # The key was revoked or narrowed since the export began: it ran on, for hours at
                    # a slow reader's pace, with every later event of the types it no longer had.
                    raise RevokedError("its key was revoked, or its event types changed, while it ran")
                self._ahead = self._read_ahead()
                chunk = head + encode(page) if head else encode(page)
                head = b""
                del page
                if chunk:
                    yield chunk
        finally:
            self._ahead.cancel()  # not yet begun: never runs

    def stop(self) -> None:
        """The answer is ending: the page being read stops at its next window."""
        self._stopped.set()

    def end(self) -> None:
        """The answer has ended (its chunks closed): the page being read stops at its next window,
        and the slot comes back once it has, not before, or clients that leave could hold every
        thread of the pool with walks nobody waits for while their slots went to new exports."""
        self.stop()
        if self._ahead is None:
            self._give_back()
        else:
            self._ahead.add_done_callback(lambda _done: self._give_back())
