"""The FastAPI application factory. Health is open; data endpoints need a key.

Its metrics go into `registry`, which the command serves on its metrics listener (telemetry.listener.serve_metrics),
not on this port: they name every key and count its requests."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventpipe import __version__
from eventpipe.api import backup, breakdown, docs, error, export, feed, flight, maintenance
from eventpipe.api.auth import KeyCheck
from eventpipe.api.backlog import Backlog
from eventpipe.api.body import BodyLimit
from eventpipe.api.cursor import Cursors
from eventpipe.api.flight import Flight
from eventpipe.api.handoff import Handoff
from eventpipe.api.keyring import Keyring
from eventpipe.api.metrics import instrument
from eventpipe.api.route import router
from eventpipe.api.stream import HEAD_ONLY
from eventpipe.api.throttle import Throttle
from eventpipe.errors import HaltStorageError
from eventpipe.store.backup import Backups
from eventpipe.store.reader import Reader

# /readyz has no key, so it never answers `busy` (a key's seats): ClickHouse out of reach, or refusing its login.
READYZ_RESPONSES = error.responses(
    503,
    say={
        503: "ClickHouse does not answer (`unavailable`), or refuses the API's queries: its user, password or "
        "database, or tables not migrated (`refused`; the API's log says which); retry after `Retry-After` seconds."
    },
)
DESCRIPTION = """\
Events ingested over MQTT and stored in ClickHouse, served over HTTP.

Data endpoints need `Authorization: Bearer <key>`: a key from `EVENTPIPE_API_KEYS`, or one
whose SHA-256 is in the keys file (`EVENTPIPE_API_KEYS_FILE`). A key of that file may be limited
to some event types (it sees no other, anywhere; `/dead-letters` answers it 403) and to a number
of requests per minute, counted by each API process (beyond it: 429 with `Retry-After`).
A key has at most a few requests in flight at once, from its check until its answer has been
read (`EVENTPIPE_API_MAX_REQUESTS_PER_KEY`, 8; beyond: 429 `too_many_requests`), and an API
process a few more in all (`EVENTPIPE_API_MAX_REQUESTS`, 32; beyond: 503 `busy`), with `Retry-After`.
Lists are newest first and paginated with an opaque `next_cursor`; lists and counts
show each event once, also while ClickHouse still holds redelivered copies.
Every error answers `{"error": code, "detail": message}`, also before a route is known: 400
`bad_request` for bytes that are not HTTP/1.x, 408 `request_timeout` for a request not all sent
within 10 s of its first byte (the connection is closed).

The `/admin/` endpoints (backups, dead-letter replay, erasure by user and its audit) need an
admin key; any other key gets 403 `forbidden`.
"""


def create_app(
    reader: Reader,
    registry: CollectorRegistry,
    api_keys: Sequence[str] | Keyring,
    cursor_secret: str = "",
    throttle: Throttle | None = None,
    backups: Backups | None = None,
    admin: maintenance.Admin | None = None,
    max_exports: int = export.MAX_EXPORTS,
    max_requests: int = flight.MAX_REQUESTS,
    max_requests_per_key: int = flight.MAX_REQUESTS_PER_KEY,
) -> FastAPI:
    """The API; `api_keys` are full-access keys, or a Keyring; `cursor_secret` signs its cursors
    (empty: a key of this process only); `throttle` keeps the keys' request rates (one per process);
    with `backups`, the /admin/backups routes too, and with `admin` the dead-letter replay and
    erasure routes, for admin keys; `max_exports` exports at once at most (api.slot), and
    `max_requests` keyed requests in flight, `max_requests_per_key` of one key (api.flight)."""
    keyring = api_keys if isinstance(api_keys, Keyring) else Keyring(api_keys)
    # Swagger UI and ReDoc served from this process (api.docs), not FastAPI's CDN pages.
    app = FastAPI(title="eventpipe", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None)
    error.install(app)
    docs.install(app)

    # async: no I/O, so no trip to the thread pool and back for a probe sent every few seconds.
    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="ClickHouse answers queries", responses=READYZ_RESPONSES)
    def readyz() -> dict[str, str]:
        failure = reader.ping()
        # Retry-After on both, as the OpenAPI document says of every 503: a load balancer may go by it.
        retry = {"Retry-After": error.UNAVAILABLE_RETRY_AFTER_S}
        if isinstance(failure, HaltStorageError):
            # Unauthenticated: the cause goes to the log only, and this says which kind it is.
            raise error.ApiError(
                503,
                "refused",
                # Tables named too: `eventpipe api` on a store no `migrate` has made was refused for good, and
                # the three it named were all right.
                "ClickHouse refuses the API's queries (its user, password or database, or tables not migrated: "
                "`eventpipe migrate`): see the API's log",
                retry,
            )
        if failure is not None:
            raise error.ApiError(503, "unavailable", "ClickHouse does not answer", retry)
        return {"status": "ready"}

    seats, exports = flight.seats(max_requests, max_requests_per_key), export.slots(max_exports)
    keys = KeyCheck(keyring, throttle, seats)
    cursors = Cursors(cursor_secret)
    # The reads' sync routes run on threads of their own (api.handoff), one for each request let in. Not the
    # export's, which hears a hang-up through anyio's worker threads (api.hangup), nor the admin routes'.
    handed_off = Handoff(max_requests).route_class()
    routers = [
        router(reader, keys, cursors, handed_off),
        breakdown.router(reader, keys, handed_off),
        export.router(reader, keys, exports),
        feed.router(reader, keys, cursors, handed_off),
    ]
    if backups is not None:
        routers.append(backup.router(backups, keys, cursors))
    if admin is not None:
        routers.append(maintenance.router(admin, keys, cursors))
    for included in routers:
        app.include_router(included)
    error.route_methods(app, routers)
    registry.register(Backlog(reader.dead_letter_statuses))
    registry.register(seats)
    registry.register(exports)
    app.add_middleware(BodyLimit)  # before anything reads a body, the key check included
    app.add_middleware(HeadAsGet)  # inside the metrics, which count HEAD as HEAD
    app.add_middleware(Flight)  # outside HeadAsGet, whose copy of the scope must share the request's seats
    instrument(app, registry, keyring, routers)  # last: it primes a series for every route defined above
    return app


class HeadAsGet:
    """HEAD on every GET route, as HTTP wants (monitors and link checkers send it):
    answered by the GET handler, with its checks and headers, and without its body.

    ASGI middleware rather than HEAD in each route's methods: FastAPI would
    list every HEAD in the OpenAPI document, and it keeps included routes in
    its own structures. The body is dropped here, not left to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        # A copy: the server reads the method in its own scope to know a body is not due.
        # HEAD_ONLY tells a streamed answer not to produce the body at all.
        as_get = {**scope, "method": "GET", HEAD_ONLY: True}

        async def headers_only(message: Message) -> None:
            if "route" in as_get:
                scope["route"] = as_get["route"]  # so the metrics around this layer name the route
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(as_get, receive, headers_only)
