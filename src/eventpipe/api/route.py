"""The data routes: events, their statistics, and dead letters. Every one needs a key."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from eventpipe.api.answer import json_answer
from eventpipe.api.auth import Granted, KeyCheck, every_type
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import KEYED, ApiError, responses
from eventpipe.api.model import (
    Bucket,
    DeadLetter,
    DeadLetterPage,
    Event,
    EventPage,
    Timeseries,
    TypeCount,
    TypeCounts,
    event_json,
    event_page_json,
    json_response,
    rfc3339,
)
from eventpipe.api.param import (
    OWN_TIME,
    TIME_HELP,
    Cursor,
    EventType,
    LetterReason,
    LetterStatus,
    Limit,
    Since,
    Until,
    UserId,
    Whole,
    only_known,
    text,
    window,
)
from eventpipe.api.path import TEXT
from eventpipe.api.where import Where, conditions
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import MAX_TYPES, Reader

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "6h": 21_600_000, "1d": 86_400_000}
DEFAULT_WINDOW_MS = 86_400_000
# Beyond this a chart is unreadable and the answer large: ask for a wider interval.
MAX_BUCKETS = 10_000
SINCE_HELP = f"Window start, on {OWN_TIME}: {TIME_HELP}. Default: a day before until."
UNTIL_HELP = f"Window end, exclusive, on {OWN_TIME}: {TIME_HELP}. Default: now."
SERIES_SINCE_HELP = (
    f"Window start, on {OWN_TIME}: {TIME_HELP}. Default: a day before until, moved back to the start of its bucket."
)


def router(reader: Reader, keys: KeyCheck, cursors: Cursors) -> APIRouter:
    # A key's event types narrow every read of events: `grant.narrow(filter)` in each route that reads them.
    api = APIRouter(dependencies=[Depends(keys), Depends(only_known)], responses=responses(*KEYED))

    @api.get(
        "/events", tags=["events"], summary="Stored events, newest first, one page at a time", response_model=EventPage
    )
    def list_events(
        grant: Granted,
        event_type: EventType = None,
        user_id: UserId = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        cursor: Cursor = None,
        where: Where = None,
    ) -> Response:
        only = grant.narrow(
            EventFilter(text(event_type), text(user_id), *window(since, until), where=conditions(where))
        )
        query_scope = cursors.scope("events", *only)
        after = cursors.decode(cursor, query_scope) if cursor else None
        if after is not None and after.tie is None:
            # Issued before pages ordered events of one millisecond by type: it would skip or repeat them.
            raise ApiError(
                422, "invalid_parameter", "cursor: issued before this API was upgraded; start again from the first page"
            )
        # The store ends a page early at its byte cap (PAGE_BYTES) before reading it.
        rows, resume = reader.event_page(only, limit, after)
        next_cursor = cursors.encode(resume, query_scope) if resume else None
        return json_answer(event_page_json(rows, next_cursor))

    # Any text, because an id may hold a slash or a line break (ids are any string up to 128 characters).
    @api.get(
        f"/events/{{event_id:{TEXT}}}",
        tags=["events"],
        summary="One event by id",
        response_model=Event,
        responses=responses(404),
    )
    def get_event(
        event_id: Annotated[str, Path(max_length=256)], grant: Granted, event_type: EventType = None
    ) -> Response:
        # An id reused under two types is two events: `event_type` picks one; without it the newest answers.
        kind = text(event_type)
        stored = reader.event(event_id, grant.narrow(EventFilter(kind)))
        if stored is None:
            raise ApiError(404, "not_found", "no event has this id" + (" and type" if kind else ""))
        return Response(event_json(stored), media_type="application/json")

    @api.get("/stats/event-types", tags=["stats"], summary="How many events of each type", response_model=TypeCounts)
    def event_types(
        grant: Granted,
        since: Since = None,
        until: Until = None,
        where: Where = None,
        limit: Annotated[
            int,
            Query(ge=1, le=MAX_TYPES, description=f"Types listed, most frequent first: 1 to {MAX_TYPES}."),
            Whole,
        ] = MAX_TYPES,
    ) -> Response:
        tally = reader.event_types(
            grant.narrow(EventFilter(None, None, *window(since, until), where=conditions(where))), limit
        )
        return json_response(
            TypeCounts(
                items=[TypeCount(event_type=kind, count=n) for kind, n in tally.items],
                total=tally.total,
                types=tally.types,
            )
        )

    @api.get(
        "/stats/timeseries", tags=["stats"], summary="Events per time bucket, oldest first", response_model=Timeseries
    )
    def timeseries(
        grant: Granted,
        interval: Annotated[Literal["1m", "5m", "15m", "1h", "6h", "1d"], Query(description="Bucket width.")] = "1h",
        since: Annotated[str | None, Query(max_length=64, description=SERIES_SINCE_HELP)] = None,
        until: Annotated[str | None, Query(max_length=64, description=UNTIL_HELP)] = None,
        event_type: EventType = None,
        where: Where = None,
    ) -> Response:
        step = INTERVALS_MS[interval]
        since_ms, until_ms = window(since, until)
        until_ms = time.time_ns() // 1_000_000 if until_ms is None else until_ms
        if since_ms is None:
            # Whole buckets by default: a partial first bucket would chart as a dip.
            since_ms = max(0, until_ms - DEFAULT_WINDOW_MS) // step * step
        if since_ms >= until_ms:  # a since after now, with until left out
            raise ApiError(422, "invalid_parameter", "since must be before until")
        first, end = since_ms // step * step, -(-until_ms // step) * step
        if (end - first) // step > MAX_BUCKETS:
            raise ApiError(
                422,
                "invalid_parameter",
                f"the window holds more than {MAX_BUCKETS} {interval} buckets: "
                "choose a wider interval or a shorter window",
            )
        only = grant.narrow(EventFilter(text(event_type), None, since_ms, until_ms, where=conditions(where)))
        counts = dict(reader.timeseries(only, step))
        return json_response(
            Timeseries(
                interval=interval,
                since=rfc3339(since_ms),
                until=rfc3339(until_ms),
                items=[Bucket(start=rfc3339(start), count=counts.get(start, 0)) for start in range(first, end, step)],
            )
        )

    @api.get(
        "/dead-letters",
        tags=["dead letters"],
        summary="Messages that could not be stored, newest first",
        # Not for a key limited to some event types: a message that failed may have no type at all.
        dependencies=[Depends(every_type)],
        responses=responses(403),
        response_model=DeadLetterPage,
    )
    def dead_letters(
        reason: Annotated[
            LetterReason, Query(max_length=64, description="Only this reason.", examples=["invalid_json"])
        ] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
        status: LetterStatus = None,
    ) -> Response:
        # A status joins the scope only when given: cursors issued before it existed stay valid.
        query_scope = cursors.scope("dead_letters", text(reason), *([status] if status else []))
        after = cursors.decode(cursor, query_scope) if cursor else None
        page = reader.dead_letter_page(text(reason), limit, after, status=status)
        return json_response(
            DeadLetterPage(
                items=[DeadLetter.of(row) for row in page.rows],
                next_cursor=cursors.encode(page.next, query_scope) if page.next else None,
            )
        )

    return api
