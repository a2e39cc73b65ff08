"""Query parameters shared by the data routes, and their checks beyond types."""

from __future__ import annotations

import json
import re
import types
import weakref
from collections import Counter
from typing import Annotated, Literal, Union, get_args, get_origin
from urllib.parse import unquote_to_bytes

from fastapi import Query, Request
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from eventpipe.api.cursor import MAX_CHARS as CURSOR_CHARS
from eventpipe.api.error import ApiError, cut
from eventpipe.events import Reason
from eventpipe.events.timestamp import to_epoch_ms

# DateTime64(3) ends in 2299; 10^13 ms (2286) keeps every bound well inside it.
LATEST_MS = 10**13
TIME_HELP = (
    "RFC 3339 (2026-11-22T09:30:00Z), an HTTP or RFC 2822 date with its zone (Sun, 22 Nov 2026 09:30:00 GMT),"
    " or epoch seconds or milliseconds (below 10^11 seconds, from 10^11 milliseconds)"
)

EventType = Annotated[str | None, Query(max_length=256, description="Only events of this type.", examples=["click"])]
UserId = Annotated[str | None, Query(max_length=256, description="Only events of this user.", examples=["user-1042"])]
# Both filter on the event's own timestamp, not on when it was stored: a late event
# never enters a window already read. GET /feed is the arrival order.
OWN_TIME = "the event's own timestamp, not when it was stored (GET /feed follows that)"
Since = Annotated[
    str | None,
    Query(
        max_length=64,
        description=f"Events whose own timestamp is at or after this time ({OWN_TIME}): {TIME_HELP}.",
        examples=["2026-11-22T00:00:00Z"],
    ),
]
Until = Annotated[
    str | None,
    Query(
        max_length=64,
        description=f"Events whose own timestamp is before this time ({OWN_TIME}): {TIME_HELP}.",
        examples=["1795392000"],
    ),
]


def _decimal(value: object) -> object:
    """A query's integer as the OpenAPI document promises it: decimal digits. pydantic's lax int took
    `1_0` as 10 and `1.0`, ` 1` or `+1` as 1, so two spellings of a value that differ for a cache or a
    log were one request, and a mistyped `1.5` was refused while `1.0` was not."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("whole_number", "Input should be a whole number, in decimal digits only")
    return value


# Every integer of a query string: Annotated[int, Query(...), Whole]; after Query, or FastAPI's
# OpenAPI document loses the bounds' names (`ge` for `minimum`).
Whole = BeforeValidator(_decimal)
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page, 1 to 1000."), Whole]
REASONS = tuple(reason.value for reason in Reason)


def _known_reason(value: str | None) -> str | None:
    # A fixed set, only ever added to: a misspelt one matched nothing, and a replay answered
    # {"examined": 0}, which reads as "nothing to replay".
    if value and value not in REASONS:
        # A custom error, so that the answer does not begin with pydantic's "Value error, ".
        raise PydanticCustomError(
            "reason", "not a dead-letter reason; one of {reasons}", {"reasons": ", ".join(REASONS)}
        )
    return value


# A dead-letter reason, or none (empty: none, as every filter).
LetterReason = Annotated[str | None, AfterValidator(_known_reason)]
# A replay status, or none (empty: none, as every filter; a Literal alone refused `?status=`).
LetterStatus = Annotated[
    Literal["pending", "failed", "replayed"] | None,
    BeforeValidator(lambda value: value or None),
    Query(description="Only letters of this replay status.", examples=["pending"]),
]
Cursor = Annotated[
    str | None,
    Query(max_length=CURSOR_CHARS, description="`next_cursor` of the previous page, with the same filters."),
]


def text(value: str | None) -> str | None:
    """An empty filter (`?event_type=`) means no filter, as in an HTML form."""
    return value or None


def instant(name: str, value: str | None) -> int | None:
    """`value` as epoch milliseconds, or a 422 naming the parameter."""
    if not value:
        return None
    try:
        epoch_ms = to_epoch_ms(value, up=True)
    except ValueError as exc:
        # An unencoded '+' of an offset reaches us as a space: hinted when a '+' there makes it a time.
        text = value.strip()
        hint = "; encode '+' as %2B in a URL" if _plus_read_as_space(text) else ""
        # The parser quotes what it read whole (up to its 64 characters); echoed like any value.
        reason = str(exc).replace(repr(text), repr(cut(text)))
        raise ApiError(422, "invalid_parameter", f"{name}: {reason}{hint}") from None
    return within(name, value, epoch_ms)


def _plus_read_as_space(text: str) -> bool:
    head, space, offset = text.rpartition(" ")
    try:
        return bool(space) and to_epoch_ms(f"{head}+{offset}", up=True) >= 0
    except ValueError:
        return False


def within(name: str, value: str, epoch_ms: int) -> int:
    """`epoch_ms`, read from `value`, or a 422 naming the parameter where the store cannot hold it."""
    if not 0 <= epoch_ms < LATEST_MS:
        raise ApiError(422, "invalid_parameter", f"{name}: {cut(value)!r} is outside 1970 to 2286")
    return epoch_ms


def window(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    since_ms, until_ms = instant("since", since), instant("until", until)
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise ApiError(422, "invalid_parameter", "since must be before until")
    return since_ms, until_ms


async def only_known(request: Request) -> None:
    """Refuse parameters the route does not take, or takes once but got twice, and a
    body it does not read: a misspelt filter (`?evnt_type=`) would otherwise be
    ignored and the client served everything, and of two values one would be
    silently dropped.
    `async` because it only reads the request: it runs on the loop, not in the pool."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    if (garbled := _encoding_problem(request.scope.get("query_string", b""))) is not None:
        raise ApiError(422, "invalid_parameter", garbled)
    known, once = _names(route)
    unknown = sorted(set(request.query_params) - known)
    repeated = sorted({name for name in once if len(request.query_params.getlist(name)) > 1})
    # All of them in one answer, five at most as for other problems: one at a time, a client fixes and retries.
    problems = [f"unknown parameter {name[:60]!r}" for name in unknown] + [
        f"{name}: given more than once" for name in repeated
    ]
    if problems:
        takes = f"; this endpoint takes {', '.join(sorted(known)) or 'no parameters'}" if unknown else ""
        raise ApiError(422, "invalid_parameter", "; ".join(problems[:5]) + takes)
    # Nor a body where none is read: POST /admin/backups with {"name": ...} would take a backup
    # under a name of the server's choosing and say nothing of the one asked for.
    if not route.dependant.body_params and await _carries_body(request):
        raise ApiError(422, "invalid_parameter", "this endpoint takes no body")
    if route.dependant.body_params and (twice := _repeated_fields(await request.body())):
        # JSON keeps the last of two: {"user_id": "a", "user_id": "b"} erased b, unchecked by whoever sent a.
        raise ApiError(422, "invalid_parameter", "; ".join(f"{name[:60]}: given more than once" for name in twice[:5]))


# A '%' that starts no escape: Starlette keeps `%ZZ` as written and reads `%FF` (no UTF-8) as U+FFFD, so a
# client's encoding bug was answered 200 with no data rather than told.
LONE_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _encoding_problem(query: bytes) -> str | None:
    if LONE_PERCENT.search(query):
        return "the query string has a '%' that starts no %XX escape: send a '%' itself as %25"
    try:
        unquote_to_bytes(query).decode("utf-8")
    except UnicodeDecodeError:
        return "the query string's %XX escapes are not UTF-8: percent-encode each UTF-8 byte of a character"
    return None


# Bodies that ask for nothing, as clients send them for a POST without options (`json={}`, a
# chunked stream of no bytes): let through.
EMPTY_BODIES = (b"", b"{}", b"null")


async def _carries_body(request: Request) -> bool:
    """Whether the request has a body that asks for something; reads a few bytes of it at most."""
    if request.headers.get("content-length", "0") in ("", "0") and "transfer-encoding" not in request.headers:
        return False
    seen = b""
    async for chunk in request.stream():
        seen += chunk
        if len(seen) > 16:
            return True
    return b"".join(seen.split()) not in EMPTY_BODIES


def _repeated_fields(body: bytes) -> list[str]:
    """The names a JSON object in `body` gives more than once, at any depth (none when it is no JSON:
    the route's own parsing answers that). The body was read already, and is at most 128 KiB (api.body)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        # Counted only when a name repeats: on the event loop, 43,000 empty objects in 128 KiB took 100 ms.
        if len(items) > 1 and len({name for name, _value in items}) < len(items):
            counted = Counter(name for name, _value in items)
            # Each name once: only_known tells five problems, which five objects repeating one name filled.
            repeated.extend(sorted(name for name, count in counted.items() if count > 1 and name not in repeated))
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # a nesting FastAPI's own parse just took was a 500 here
        return []
    return repeated


# Each route's names, read once: read off its fields' annotations on every request, they took about half
# of this check's time in a profile of /stats/event-types. By the route's id, as routes are not hashable; a
# weak reference tells a route from a later one given the same id, and lets an app's routes go with it.
_NAMES: dict[int, tuple[weakref.ref[APIRoute], frozenset[str], frozenset[str]]] = {}


def _names(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The query parameters `route` takes, and those of them it takes once: a list (`where`) is repeated
    by design."""
    found = _NAMES.get(id(route))
    if found is None or found[0]() is not route:
        fields = route.dependant.query_params
        known = frozenset(field.alias for field in fields)
        once = known - {field.alias for field in fields if _is_list(field.field_info.annotation)}
        found = _NAMES[id(route)] = (weakref.ref(route), known, once)
    return found[1], found[2]


def _is_list(annotation: object) -> bool:
    kinds = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return any(get_origin(kind) is list for kind in kinds)
