"""The API's one error shape, {"error", "detail"}, for every 4xx and 5xx it sends."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route

from eventpipe.errors import BusyStorageError, CostlyQueryError, HeavyReadError, RetryableStorageError, StorageError
from eventpipe.events.shape import json_kind
from eventpipe.store.turn import WAIT_S
from eventpipe.telemetry.summary import Summary

log = logging.getLogger(__name__)

# The longest slice of a rejected value echoed back: enough to recognise it,
# never a megabyte of someone's garbage.
ECHO_CHARS = 60
# The most errors one 422 explains: a body of 1,000 bad ids would otherwise be answered with 1,000 echoes.
MAX_EXPLAINED = 5
# A client that hung up before its request was read (nginx's code): counted as its doing, not the server's.
CLIENT_GONE = 499
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_parameter",
    429: "rate_limited",
    CLIENT_GONE: "client_closed_request",
}


class ErrorBody(BaseModel):
    error: str = Field(description="Stable machine-readable code.", examples=["invalid_parameter"])
    detail: str = Field(
        description="What was wrong, for a human.",
        examples=["limit: Input should be less than or equal to 1000 (got '1001')"],
    )


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


# What any route behind a key can answer besides its own: no key, a body over the cap, a bad parameter, a
# limit, ClickHouse refusing or out of reach.
KEYED = (401, 413, 422, 429, 500, 503)


def responses(*statuses: int, say: dict[int, str] | None = None) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error statuses a route can answer; `say` gives a route's own description
    of a status where it answers other codes than the common ones."""
    described = {
        400: "The request could not be read (`bad_request`): not HTTP/1.0 or 1.1, or its body ended before its "
        "`Content-Length`. A body that arrived whole but is not the JSON asked for gets 422.",
        401: "No valid `Authorization: Bearer <key>` header.",
        403: "The key may not use this endpoint (`forbidden`): it is limited to some event types, or not an admin key.",
        404: "No such item.",
        413: "The request body is over 128 KiB (`payload_too_large`), the most any endpoint takes; refused unread.",
        422: "A parameter is invalid (`invalid_parameter`; `detail` says which and why, up to five at once), or "
        "the read ran past `EVENTPIPE_API_QUERY_TIMEOUT_S` or needed more of ClickHouse's memory than "
        "`EVENTPIPE_API_QUERY_MEMORY_BYTES` (`too_costly`: narrow it, with `since` or a type; "
        "retrying it as it is fails the same way, unless the store has merged its newest parts meanwhile).",
        429: "The key made its `requests_per_minute` in the last 60 s (`rate_limited`), or has as many requests "
        "in flight as one key may (`too_many_requests`; an export: `too_many_exports`); retry after `Retry-After` "
        "seconds. Limits are counted by each API process.",
        500: "The server failed (`storage_error`: ClickHouse refused the query; `internal_error`: a bug); the "
        "operator must look at the API's log.",
        503: "ClickHouse cannot answer now (`unavailable`), or the API answers as many requests as it does at once, "
        "or the read needs more memory than a read may hold until the store's merges catch up (`busy`); retry "
        "after `Retry-After` seconds.",
    }
    described |= say or {}
    out: dict[int | str, dict[str, object]] = {}
    for status in statuses:
        entry: dict[str, object] = {"model": ErrorBody, "description": described[status]}
        if status in EXAMPLES:
            entry["content"] = {"application/json": {"example": {"error": CODES[status], "detail": EXAMPLES[status]}}}
        if status in (429, 503):
            entry["headers"] = {"Retry-After": RETRY_AFTER}
        out[status] = entry
    return out


EXAMPLES = {
    403: "this key sees only some event types, and this endpoint serves all of them",
    429: "this key may make 120 requests per minute; retry in 7 s",
}
# A migration's copy of events_by_user took 12 s at 10M events here: minutes at 100M.
BUSY_RETRY_AFTER_S = "30"
# Reads past the memory bound with no window to narrow (store.bound.HeavyReadError), answered 503 here or cut
# off midway (api.stream): any key can ask for them while merges are behind, so they are counted, not logged
# one by one. One count for the process, as the log is.
HEAVY = Summary(
    "answered or cut off {n} read(s) 503 busy: each needed more than EVENTPIPE_API_QUERY_MEMORY_BYTES with no "
    "window to narrow, or the API user's memory was all held (parts still to merge: EventpipeClickHousePartsPressure)"
)
# Why a route that takes turns (store.turn) answers `busy`, beside the common causes.
TURN_TAKEN = (
    f"backups, their listing, erasures and replays (one at a time) took the API process's turn for the {WAIT_S:g} s "
    "this one waited for it"
)
# The 503 of the /admin/ routes that take turns.
TURN_BUSY = (
    "ClickHouse cannot answer now (`unavailable`), or the API answers as many requests as it does at once, or "
    f"{TURN_TAKEN} (`busy`: `detail` says which); retry after `Retry-After` seconds."
)
# ClickHouse out of reach: a restart or a failover takes seconds.
UNAVAILABLE_RETRY_AFTER_S = "5"
RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "example": 7}}


def install(app: FastAPI) -> None:
    """Route every failure through ErrorBody."""
    # Any key can ask for a read past its bound at will: a line each would let it write the log.
    costly = Summary(
        "answered {n} read(s) 422 too_costly: each ran past EVENTPIPE_API_QUERY_TIMEOUT_S or "
        "EVENTPIPE_API_QUERY_MEMORY_BYTES"
    )

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _body(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        as_json = "json" in request.headers.get("content-type", "").lower()
        explained = "; ".join(_explain(error, as_json) for error in errors[:MAX_EXPLAINED])
        if len(errors) > MAX_EXPLAINED:
            explained += f"; and {len(errors) - MAX_EXPLAINED} more"
        return _body(422, "invalid_parameter", explained)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's answer to a body that arrived whole but that json could not take other than for its
            # syntax (that one is a 422 already): bytes that are not UTF-8, an integer of over 4,300 digits,
            # a nesting past the interpreter's. The 422 of a body that is not JSON, as README says (an attack
            # found these answered 400, which README gives to requests that are not HTTP).
            return _body(422, "invalid_parameter", _not_json(exc.__cause__))
        headers = exc.headers
        if exc.status_code == 405 and headers and "Allow" in headers:
            # The router names the methods of the first route of this path only (DELETE /admin/backups
            # was told POST, though GET lists them).
            headers = {**headers, "Allow": _allowed(request, headers["Allow"])}
        return _body(exc.status_code, CODES.get(exc.status_code, "error"), str(exc.detail), headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(_request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # Reading a body it had announced: nobody is there to answer. It was a 500 and two tracebacks,
        # which any key could repeat at will against the availability SLO.
        return _body(CLIENT_GONE, CODES[CLIENT_GONE], "the client closed the connection before its request was read")

    @app.exception_handler(StorageError)
    async def storage(_request: Request, exc: StorageError) -> JSONResponse:
        # An outage is worth a client retry; anything else (auth, a missing
        # table, a refused query) needs an operator. Both are the server's
        # fault, so 5xx, and the cause goes to the log, not to the client,
        # but for the store's own work (a migration's copy), which takes
        # seconds to minutes and whose message is written for the client.
        if isinstance(exc, CostlyQueryError):
            # The client's request, not the server's health: retrying it as it is would fail the same way.
            costly()
            return _body(422, "too_costly", str(exc))
        if isinstance(exc, BusyStorageError):
            if isinstance(exc, HeavyReadError):
                HEAVY()
            else:
                log.warning("refused while the store is busy: %s", exc)
            return _body(503, "busy", str(exc), {"Retry-After": BUSY_RETRY_AFTER_S})
        log.error("query failed: %s", exc)
        if isinstance(exc, RetryableStorageError):
            return _body(
                503,
                "unavailable",
                "ClickHouse cannot answer now; retry later",
                {"Retry-After": UNAVAILABLE_RETRY_AFTER_S},
            )
        return _body(500, "storage_error", "ClickHouse refused the query; the operator has to look at the logs")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # A bug: the client still gets the one error shape; the traceback goes to the log.
        log.error("unhandled error answering a request", exc_info=exc)
        return _body(500, "internal_error", "the server failed; the operator has to look at the logs")


def route_methods(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Note on `app` its own routes and those of `routers`, whose methods a 405's Allow names."""
    routes = [*app.router.routes, *(route for router in routers for route in router.routes)]
    app.state.routes = [route for route in routes if isinstance(route, Route)]


def _allowed(request: Request, said: str) -> str:
    """Every method a route of the request's path takes, HEAD with GET (every GET route answers HEAD too:
    api.app.HeadAsGet); what the router `said` where no routes were noted."""
    # Matched as the router matches (a root_path included): a path-only match is PARTIAL.
    routes: list[Route] = getattr(request.app.state, "routes", [])
    methods = {
        method
        for route in routes
        if route.matches(request.scope)[0] is not Match.NONE
        for method in route.methods or ()
    }
    methods = methods or {method.strip() for method in said.split(",") if method.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _explain(error: dict[str, object], as_json: bool = True) -> str:
    """One validation error as a client can act on it. `as_json`: the request said its body is JSON."""
    location = error.get("loc", ())
    kind = error.get("type")
    if kind == "json_invalid":
        # FastAPI names the body by the character where its JSON breaks: "body[0]: JSON decode error".
        context = error.get("ctx")
        why = context.get("error") if isinstance(context, dict) else None
        at = location[-1] if isinstance(location, tuple | list) and location else "?"
        return f"the body is not JSON ({why or 'cannot be decoded'}, at character {at})"
    if location in (("body",), ["body"]) and kind in ("model_attributes_type", "dict_type", "model_type"):
        if not as_json or isinstance(error.get("input"), bytes):  # not parsed: its type did not say JSON
            return "the body must be a JSON object, sent with the header 'Content-Type: application/json'"
        kind = json_kind(error.get("input"))
        return "the body must be a JSON object, not " + {"array": "an array", "null": "null"}.get(kind, f"a {kind}")
    # A body's unknown field is named by the client: cut like a value. An item of a list is named by the
    # list and its index (`ids[3]`), not by the index alone.
    parts, indexes = list(location) if isinstance(location, tuple | list) else [], ""
    while parts and isinstance(parts[-1], int):
        indexes = f"[{parts.pop()}]{indexes}"
    name = (cut(str(parts[-1])) if parts else "request") + indexes
    message = str(error.get("msg", "invalid"))
    value = error.get("input")
    if isinstance(value, str):
        return f"{name}: {message} (got {cut(value)!r})"
    return f"{name}: {message}"


def cut(text: str) -> str:
    """`text`, or its first ECHO_CHARS characters and an ellipsis."""
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def _body(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _not_json(cause: BaseException) -> str:
    """Why json could not take a body, for its 422."""
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not JSON: its bytes are not UTF-8"
    if isinstance(cause, RecursionError):
        return "the body is not JSON this API reads: nested too deeply"
    return f"the body is not JSON this API reads: {str(cause)[:160]}"
