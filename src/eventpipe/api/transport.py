"""A connection's transport as uvicorn's request cycles use it: closing one while an answer is half sent resets it.

uvicorn closes the connection (a FIN, after what is buffered) when an app returns without finishing its answer:
an export cut off midway (its key revoked, the store gone, the API stopping). Over HTTP/1.1 the missing last
chunk tells the client; over HTTP/1.0 the body ends where the connection does, so the cut answer looked
complete (curl --http1.0 exited 0), and so did it through a proxy that speaks HTTP/1.0 to the API, as nginx
does by default. A reset (RST) is an error in every client, whatever the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any, Protocol

# SO_LINGER on, for 0 s: close() sends RST and drops what is unsent.
LINGER_NONE = struct.pack("ii", 1, 0)


class Cycle(Protocol):
    response_started: bool
    response_complete: bool


class Owner(Protocol):
    cycle: Cycle | None


class CutOff:
    """`transport`, whose close() aborts while `owner`'s current answer is started and not complete."""

    def __init__(self, transport: asyncio.Transport, owner: Owner) -> None:
        self._transport = transport
        self._owner = owner

    def close(self) -> None:
        cycle = self._owner.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # What the app wrote still goes to the socket first: a client keeps the whole pages it was sent.
            reset(self._transport, flush=True)
        else:
            self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def reset(transport: asyncio.Transport, *, flush: bool = False) -> None:
    """Close `transport` with a reset, not a FIN; with `flush`, once its buffer is handed to the socket.

    An abort alone drops what is unsent but still ends with a FIN. The reset drops what the kernel has
    not sent yet, so a client gets less than it was written, and an error instead of an end."""
    connection = transport.get_extra_info("socket")
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NONE)
    if flush:
        transport.close()
    else:
        transport.abort()
