"""A bound on the bytes of a request's body, kept before any of it is parsed.

FastAPI reads and parses a route's JSON body before its dependencies run, the
key check among them, so without a bound anyone could send 300 MB and cost the
process a gigabyte of memory for a 401. A body announced
larger is refused at its first read, unread; one sent without a length, once
that many bytes came. Refused where the route reads it, so the answer is
counted under its route, in the API's one error shape (FastAPI's own
`max_body_size` answers plain text, before routing), and with the connection
closed: the rest of the body is not read, so nothing on it could be a request.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        announced, received = _declared(scope), 0

        async def bounded() -> Message:
            nonlocal received
            if announced <= self.limit:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                received += len(message.get("body", b""))
                if received <= self.limit:
                    return message
            # An HTTPException, which FastAPI lets through from a body read (anything else it answers 400).
            raise HTTPException(
                TOO_LARGE,
                f"the request body is over {self.limit} bytes, the most any endpoint takes",
                headers={"Connection": "close"},
            )

        await self.app(scope, bounded, send)


def _declared(scope: Scope) -> int:
    """The Content-Length the request announced, so that a larger one is refused before its first byte
    is read; 0 without one (or one that is no number: the server refuses those)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
