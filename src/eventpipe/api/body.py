"""A bound on the bytes of a request's body, kept before any of it is parsed.

FastAPI reads and parses a route's JSON body before its dependencies run, the
key check among them, so without a bound anyone could send 300 MB and cost the
process a gigabyte of memory for a 401 (found by an attack). A body announced
larger is refused as it is announced, unread; one sent without a length, once
that many bytes came. FastAPI's own `max_body_size` answers in plain text, not
in the API's one error shape.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventpipe.api.error import CODES

# The largest body a route takes is a replay's: 1,000 ids of 64 characters, under 70 KB.
MAX_BODY_BYTES = 128 * 1024
TOO_LARGE = 413


class BodyLimit:
    """413 `payload_too_large` for a body over `limit` bytes, with or without a key."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared(scope) > self.limit:
            answer = JSONResponse({"error": CODES[TOO_LARGE], "detail": self._detail()}, status_code=TOO_LARGE)
            await answer(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException, which FastAPI lets through from a body read (anything else it
                    # answers 400); the app's handler gives it the error shape.
                    raise HTTPException(TOO_LARGE, self._detail())
            return message

        await self.app(scope, bounded, send)

    def _detail(self) -> str:
        return f"the request body is over {self.limit} bytes, the most any endpoint takes"


def _declared(scope: Scope) -> int:
    """The Content-Length the request announced; 0 without one, or with one that is no number
    (the server refuses those before they get here)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
