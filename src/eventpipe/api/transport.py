"""A connection's transport as uvicorn's request cycles use it: an HTTP/1.0 answer cut off midway is reset.

uvicorn closes the connection (a FIN, after what is buffered) when an app returns without finishing its answer:
an export cut off midway (its key revoked, the store gone, the API stopping). Over HTTP/1.1 the missing last
chunk tells the client, and it keeps every page it was sent. Over HTTP/1.0 the body ends where the connection
does, so the cut answer looked complete (curl --http1.0 exited 0), and so did it through a proxy that speaks
HTTP/1.0 to the API, as nginx does by default. Such a connection is reset (RST) instead, once what was written
has left the process: not closed, since over TLS a close first sends close_notify, which is a clean end too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import Any, Protocol

# SO_LINGER on, for 0 s: closing the socket sends RST and drops what the kernel has not sent.
LINGER_NONE = struct.pack("ii", 1, 0)
# How often, and how long at most, a cut HTTP/1.0 answer waits for its buffer to leave before the reset.
DRAIN_POLL_S = 0.05
DRAIN_MAX_S = 60.0


class Cycle(Protocol):
    scope: Any
    response_started: bool
    response_complete: bool


class Owner(Protocol):
    cycle: Cycle | None


class Relay:
    """A transport wrapped: what a subclass does not define is `transport`'s own."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def __getattr__(self, name: str) -> Any:
        # Kept on the instance once looked up: write and is_closing are called for every slice and packet.
        found = getattr(self._transport, name)
        setattr(self, name, found)
        return found


class CutOff(Relay):
    """`transport`, whose close() resets it while `owner`'s current HTTP/1.0 answer is started and not complete."""

    def __init__(self, transport: asyncio.Transport, owner: Owner) -> None:
        super().__init__(transport)
        self._owner = owner

    def close(self) -> None:
        cycle = self._owner.cycle
        cut = cycle is not None and cycle.response_started and not cycle.response_complete
        if cut and cycle is not None and cycle.scope.get("http_version") == "1.0":
            self._reset_when_sent(time.monotonic() + DRAIN_MAX_S)
        else:
            self._transport.close()

    def _reset_when_sent(self, deadline: float) -> None:
        """Reset once the pages written have left the process (a client keeps what it was sent), or at
        `deadline`: a client that reads nothing is not waited for."""
        if self._transport.is_closing():
            return
        if self._transport.get_write_buffer_size() and time.monotonic() < deadline:
            asyncio.get_running_loop().call_later(DRAIN_POLL_S, self._reset_when_sent, deadline)
            return
        reset(self._transport)


def reset(transport: asyncio.Transport) -> None:
    """Close `transport` at once with a reset, not a FIN (nor, over TLS, close_notify): what is unsent is dropped,
    and the client sees an error, not an end."""
    connection = transport.get_extra_info("socket")
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NONE)
    transport.abort()
