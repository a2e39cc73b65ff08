"""Answers in flight: a keyed request holds a seat from its key check until its client has taken the answer.

Seats are api.slot's: a process bound (EVENTPIPE_API_MAX_REQUESTS) and a share
per key (EVENTPIPE_API_MAX_REQUESTS_PER_KEY). Two costs had no bound. One
key's 100 concurrent feed pages held every thread of the API's pool, so that
/readyz took 27 s and other keys timed out. And an answer of up to 8 MiB was
handed to the server whole, the request then done: 1,000 connections that
asked for one each and read nothing held 8 GiB. Here bodies go to the server
in slices, each once the client has taken enough of the one before (the
server pauses the send while its write buffer is full), so the request, and
its seat, last until the client has nearly all of its answer. A client that
reads nothing keeps its seat until the stall bound drops it (api.protocol).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventpipe.api.slot import Slots
from eventpipe.store.reader import CALLER

# The most of an answer written to the server at once: about its write buffer's high-water mark, so a
# client that reads nothing holds a slice there, not a page of megabytes.
SLICE_BYTES = 64 * 1024
# The reads run on threads of their own, one per request in flight (api.handoff); the export and the
# admin routes on anyio's 40 (its default), where probes and a keys file's reading keep the threads that
# the most requests in flight leave them.
MAX_REQUESTS = 32
MAX_REQUESTS_PER_KEY = 8
# Seconds a refused client is told to wait: most answers take well under one.
RETRY_AFTER_S = 1
# Where a request's seats are kept, in the ASGI scope (shared by the copies middleware makes of it).
SEATS = "eventpipe.seats"
# When the app handed over the last of its answer (time.perf_counter()), in the ASGI scope: the API's
# latency is timed to it (api.metrics), not to when a client, however slow its network, took it.
ANSWERED = "eventpipe.answered"


def seats(total: int = MAX_REQUESTS, per_key: int = MAX_REQUESTS_PER_KEY) -> Slots:
    return Slots(total, per_key, "requests", "EVENTPIPE_API_MAX_REQUESTS", RETRY_AFTER_S)


def seat(request: Request, slots: Slots, key: str) -> None:
    """A seat for this request of `key`, given back once its answer has been taken (ApiError when none).
    Outside Flight (an app without it) there is nothing to hold it, and nothing is taken."""
    held: list[Callable[[], None]] | None = request.scope.get(SEATS)
    if held is not None and not held:  # one a request, however often its key is checked
        held.append(slots.take(key))
        # Seats alone bound a key's requests, not their cost: one key's 8 live counts made every other key's
        # page 14 times slower. On the embedded engine its reads run in a lane of its own
        # (store.pool), one at a time, beside other keys' reads.
        CALLER.set(key)


class Flight:
    """ASGI middleware: sends bodies in slices, and gives a request's seats back once it has ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[Callable[[], None]] = []
        scope[SEATS] = held

        async def sliced(message: Message) -> None:
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                scope[ANSWERED] = time.perf_counter()
            if len(body) <= SLICE_BYTES:
                await send(message)
                return
            more = message.get("more_body", False)
            for start in range(0, len(body), SLICE_BYTES):
                if start:
                    # The event loop's turn between slices: a send the server does not pause for returns
                    # without one, and a client that reset the connection is only marked gone by a callback
                    # the loop runs. Without it every further slice was written to the dead socket, and past
                    # the fifth asyncio logged a warning for each: any key flooded the log by resetting
                    # exports (about 7 lines each).
                    await asyncio.sleep(0)
                end = start + SLICE_BYTES
                await send(
                    {"type": "http.response.body", "body": body[start:end], "more_body": more or end < len(body)}
                )

        try:
            await self.app(scope, receive, sliced)
        finally:
            for give_back in held:
                give_back()
