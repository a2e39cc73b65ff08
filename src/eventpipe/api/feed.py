"""GET /feed: every stored event once, in the order the store committed it, for clients that keep a copy."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from eventpipe.api.answer import json_answer
from eventpipe.api.auth import Granted, KeyCheck
from eventpipe.api.bookmark import MAX_CHARS, Bookmarks
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import KEYED, ApiError, responses
from eventpipe.api.filter import Where, conditions
from eventpipe.api.model import EXAMPLE_EVENT, Event, event_json, rfc3339
from eventpipe.api.param import EventType, Whole, only_known, text
from eventpipe.events import Event as StoredEvent
from eventpipe.store.feed import Feed, FeedRewound, Place
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader

SUMMARY = "Every stored event once, in arrival order, resumable"
DESCRIPTION = """\
For clients that keep a copy of the events. Start without `after`, then pass each answer's `next`
as `after`, for ever: once caught up, poll with the last `next` (an empty page still has one).
Caught up means an empty page: a page can hold fewer than `limit` events while more follow (it
ends with its epoch, below). Two exceptions: four or more pages' worth of events that serve
nothing (copies of events already served, as a producer re-sending an old batch makes, or events
whose first copy the filter refuses) ahead of new ones make an empty page; and so does a `where` that
keeps few events, when a page has read for `EVENTPIPE_API_QUERY_TIMEOUT_S` without finding one. The
next poll goes on from there.

**Guarantee.** A client that follows `next` from the first page receives every stored event exactly
once: events stored late, events whose own `timestamp` is old, events stored at the same time by
several workers, and events whose copies (redeliveries, re-sends) were stored more than once.

**Order.** By arrival: the feed goes from one batch of stored events (an epoch: what the store held
when the previous one was served) to the next, and an event stored after another comes in the same
epoch or a later one. Inside an epoch, events come by `timestamp`, then type and id.

**complete_until.** Every event the pipeline received before this instant is in this page or an
earlier one. It advances when an epoch has been served completely, as far as every ingest worker
has committed what it received.

`where` filters as on `/events`; a key limited to some event types gets only those.
Tokens are signed and bound to the filters and the key's types; they stay valid across restarts of the
API when `EVENTPIPE_CURSOR_SECRET` is set (`eventpipe up` keeps one in its data dir). Unlike `/events`,
`since` and `until` do not apply here: those filter on the event's own timestamp, which says nothing
about when it was stored.
"""
After = Annotated[
    str | None,
    Query(
        max_length=MAX_CHARS,
        description="`next` of the previous answer, unchanged, with the same filters. Absent: from the beginning.",
        examples=["mVq1G2dJZ0t3bYbF0nF9skYp2Q0AAAAAAAAAAAAAAAAAAGMAAAAAAAAAAA"],
    ),
]
FeedLimit = Annotated[int, Query(ge=1, le=10_000, description="Events per page, 1 to 10000.", examples=[1000]), Whole]


class FeedPage(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "items": [EXAMPLE_EVENT],
                    "next": "mVq1G2dJZ0t3bYbF0nF9skYp2Q0AAAAAAAAAAAAAAAAAAGMAAAAAAAAAAA",
                    "complete_until": "2026-11-22T09:30:10.000Z",
                }
            ]
        }
    }

    items: list[Event] = Field(description="Events in feed order; none: caught up. Fewer than `limit` is no end.")
    next: str = Field(description="Pass as `after` for the next page; always present, also on an empty page.")
    complete_until: str = Field(
        description="RFC 3339: every event the pipeline received before it is in this page or an earlier one."
    )


def router(reader: Reader, keys: KeyCheck, cursors: Cursors, route_class: type[APIRoute] = APIRoute) -> APIRouter:
    api = APIRouter(
        dependencies=[Depends(keys), Depends(only_known)], responses=responses(*KEYED), route_class=route_class
    )
    # A page reads windows for about as long as a read a client can narrow may run, then answers what it has.
    feed, bookmarks = Feed(reader.run, reader.timeout_s), Bookmarks(cursors)

    @api.get("/feed", tags=["events"], summary=SUMMARY, description=DESCRIPTION, response_model=FeedPage)
    def arrivals(
        grant: Granted, after: After = None, limit: FeedLimit = 1000, event_type: EventType = None, where: Where = None
    ) -> Response:
        # A scoped key's types narrow the feed like every read, and its token is bound to them.
        only = grant.narrow(EventFilter(text(event_type), where=conditions(where)))
        query_scope = cursors.scope("feed", *only)
        place = bookmarks.decode(after, query_scope) if after else Place()
        try:
            page = feed.page(only, limit, place)
        except FeedRewound:
            detail = "after: the store was restored from a backup since it was issued; start again from the first page"
            raise ApiError(422, "invalid_parameter", detail) from None
        token = bookmarks.encode(page.next, query_scope)
        return json_answer(_page_json(page.rows, token, page.complete_until_ms))

    return api


def _page_json(rows: list[StoredEvent], token: str, complete_until_ms: int) -> bytes:
    """The FeedPage as JSON, each event's properties spliced in as stored (api.model.event_json)."""
    items = b",".join(event_json(row) for row in rows)
    tail: dict[str, Any] = {"next": token, "complete_until": rfc3339(complete_until_ms)}
    return b'{"items":[' + items + b"]," + json.dumps(tail, separators=(",", ":")).encode()[1:]
