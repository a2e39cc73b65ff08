"""What the API answers, with the examples its OpenAPI document shows."""

from __future__ import annotations

import base64
import json
from datetime import date
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, Field

from eventpipe.api.answer import json_answer
from eventpipe.events import Event as StoredEvent
from eventpipe.events.codec import escaped
from eventpipe.store.row import StoredDeadLetter

EXAMPLE_EVENT: dict[str, Any] = {
    "event_id": "0b7e6c1e-6a51-4c39-9a6e-2f1f0f7c8d10",
    "event_type": "purchase",
    "timestamp": "2026-11-22T09:30:12.345Z",
    "received_at": "2026-11-22T09:30:12.401Z",
    "user_id": "user-1042",
    "topic": "events/purchase",
    "properties": {"page": "/checkout", "amount": 42.5, "browser": "firefox", "country": "DE"},
}


EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
SECONDS = [f"{second:02d}." for second in range(60)]
MILLISECONDS = [f"{ms:03d}Z" for ms in range(1000)]


def rfc3339(epoch_ms: int) -> str:
    """2026-11-22T09:30:12.345Z, from integers and tables: an export writes two a
    row, and this is 0.5 µs where datetime's isoformat took 3.4 (and was a
    millisecond off for some instants after 2242, from a float of seconds)."""
    minute, ms = divmod(epoch_ms, 60_000)
    second, ms = divmod(ms, 1000)
    return _minute(minute) + SECONDS[second] + MILLISECONDS[ms]


@lru_cache(maxsize=4096)
def _minute(minute: int) -> str:
    day, minute = divmod(minute, 1440)
    hour, minute = divmod(minute, 60)
    return f"{date.fromordinal(EPOCH_ORDINAL + day).isoformat()}T{hour:02d}:{minute:02d}:"


class Event(BaseModel):
    model_config = {"json_schema_extra": {"examples": [EXAMPLE_EVENT]}}

    event_id: str
    event_type: str
    timestamp: str = Field(description="When it happened (RFC 3339, UTC, milliseconds).")
    received_at: str = Field(description="When the worker received it.")
    user_id: str | None
    topic: str = Field(description="The MQTT topic it was published to.")
    properties: dict[str, Any] = Field(description="Every other field of the payload, nesting kept.")


def json_response(answer: BaseModel) -> Response:
    """`answer` as a JSON response, made in the route's own thread.

    A sync route that returns a model makes FastAPI validate it again in a
    second trip to the thread pool, and on a busy host each trip waits for a
    core (about half a millisecond of the all-time types' answer). Returned as a
    Response it is taken as it is, the route's `response_model` still
    documenting it."""
    # Bytes straight from pydantic-core: model_dump_json() is a str that Response then encodes,
    # two whole copies of the answer at once (a 7.4 MB /dead-letters page held as 2 x 7.4 MB).
    return json_answer(answer.__pydantic_serializer__.to_json(answer))


def event_json(stored: StoredEvent) -> bytes:
    """The Event of `stored` as JSON, its properties spliced in as stored."""
    return event_text(stored).encode()


def event_text(stored: StoredEvent) -> str:
    """The Event of `stored` as JSON text, byte for byte what json.dumps(ensure_ascii=False,
    separators=(",", ":")) writes, with the properties spliced in as stored, and codec.LINE_BREAKS escaped
    (the worker escapes them in the properties it stores; rows stored before it did are escaped here).

    The column holds the JSON text the worker wrote; parsing it into Python
    objects and encoding them again cost more time and memory than the query
    itself (a 1000-event page of 50 KiB payloads grew the process by 500 MiB).
    Written out rather than through json.dumps of a dict: 6 instead of 20 µs
    an event, which is what decides an export's rate."""
    user = "null" if stored.user_id is None else encode_basestring(stored.user_id)
    text = (
        f'{{"event_id":{encode_basestring(stored.event_id)},"event_type":{encode_basestring(stored.event_type)},'
        f'"timestamp":"{rfc3339(stored.timestamp_ms)}","received_at":"{rfc3339(stored.received_ms)}",'
        f'"user_id":{user},"topic":{encode_basestring(stored.topic)},"properties":{stored.properties}}}'
    )
    return escaped(text)


def event_page_json(rows: list[StoredEvent], next_cursor: str | None) -> bytes:
    """The EventPage of `rows` as JSON. Empties `rows`: each row is let go as
    soon as it is JSON, so a page is held about twice, not four times."""
    rows.reverse()
    parts = [b'{"items":[']
    while rows:
        parts += (event_json(rows.pop()), b",")
    if len(parts) > 1:
        parts.pop()  # the comma after the last item
    parts.append(b'],"next_cursor":' + json.dumps(next_cursor).encode() + b"}")
    return b"".join(parts)


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class TypeCount(BaseModel):
    event_type: str
    count: int


class TypeCounts(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "items": [{"event_type": "page_view", "count": 812}, {"event_type": "click", "count": 77}],
                    "total": 889,
                    "types": 2,
                }
            ]
        }
    }

    items: list[TypeCount] = Field(description="Most frequent first, at most `limit` of them.")
    total: int = Field(description="Events of every type, listed or not.")
    types: int = Field(description="Types in all; more than the items when `limit` cut the list.")


class Bucket(BaseModel):
    start: str = Field(
        description="Start of the bucket (RFC 3339), a multiple of the interval since the epoch in UTC (1d: UTC"
        " midnight), or on the clocks of `tz` with its offset (1d: its midnight); it spans one interval (in a"
        " zone, a day 23 or 25 hours when its clocks change), but the first and the last count only what lies"
        " from since to until."
    )
    count: int


class Timeseries(BaseModel):
    interval: str
    tz: str = Field(description="The time zone of the buckets: `UTC` unless `tz` named another.")
    since: str
    until: str
    items: list[Bucket] = Field(description="Every bucket of the window, oldest first; empty ones count 0.")


class DeadLetter(BaseModel):
    # Pages are cut in the store by an upper bound of this JSON
    # (store.query.DEAD_LETTER_BYTES, EVENT_BYTES for Event): a new field must
    # fit its 256 spare bytes or be counted there.
    dead_letter_id: str
    received_at: str
    topic: str
    reason: str = Field(examples=["invalid_json"])
    detail: str = Field(examples=["Expecting ',' delimiter: line 1 column 17 (char 16)"])
    payload: str = Field(description="The payload as received (cut at the size limit), in `payload_encoding`.")
    payload_encoding: Literal["utf-8", "base64"] = Field(
        description="utf-8 when the bytes are text, else base64 of the exact bytes."
    )
    payload_size: int = Field(description="Size of the whole payload in bytes.")
    # At most 20 bytes of JSON: within the spare 256.
    status: Literal["pending", "failed", "replayed"] = Field(
        description="Of its replay (POST /admin/dead-letters/replay): not tried yet, still refused, or stored.",
        examples=["pending"],
    )

    @classmethod
    def of(cls, stored: StoredDeadLetter) -> DeadLetter:
        try:
            payload, encoding = stored.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(stored.payload).decode(), "base64"
        return cls(
            dead_letter_id=stored.dead_letter_id,
            received_at=rfc3339(stored.received_ms),
            topic=stored.topic,
            reason=stored.reason,
            detail=stored.detail,
            payload=payload,
            payload_encoding=encoding,  # type: ignore[arg-type]
            payload_size=stored.payload_size,
            status=stored.status,  # type: ignore[arg-type]
        )


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None
