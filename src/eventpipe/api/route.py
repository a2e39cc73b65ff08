"""The data routes: events, their statistics, and dead letters. Every one needs a key."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.routing import APIRoute

from eventpipe.api import series
from eventpipe.api.answer import json_answer
from eventpipe.api.auth import Granted, KeyCheck, every_type
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import KEYED, ApiError, responses
from eventpipe.api.filter import Where, conditions
from eventpipe.api.model import (
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
from eventpipe.api.series import TZ_HELP, time_zone
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import MAX_TYPES, Reader

SINCE_HELP = f"Window start, on {OWN_TIME}: {TIME_HELP}. Default: a day before until."
UNTIL_HELP = f"Window end, exclusive, on {OWN_TIME}: {TIME_HELP}. Default: now."
SERIES_SINCE_HELP = (
    f"Window start, on {OWN_TIME}: {TIME_HELP}. Default: a day before until, moved back to the start of its bucket."
)


def router(reader: Reader, keys: KeyCheck, cursors: Cursors, route_class: type[APIRoute] = APIRoute) -> APIRouter:
    # A key's event types narrow every read of events: `grant.narrow(filter)` in each route that reads them.
    api = APIRouter(
        dependencies=[Depends(keys), Depends(only_known)], responses=responses(*KEYED), route_class=route_class
    )

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
        tz: Annotated[str | None, Query(max_length=64, description=TZ_HELP, examples=["Europe/Berlin"])] = None,
    ) -> Response:
        zone = time_zone(tz)
        filters = conditions(where)

        def only(since_ms: int, until_ms: int) -> EventFilter:
            return grant.narrow(EventFilter(text(event_type), None, since_ms, until_ms, where=filters))

        return json_response(series.timeseries(reader, interval, since, until, zone, only))

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
