"""A connection's writes as one send where they can be: an answer's head goes out with its body.

uvicorn writes an answer's head (status line and headers) and its body apart, so each answer
took two sends, and a client waiting on its socket was woken for the head alone, read it, and
waited again for the body. Here a small write made while nothing is held is kept until the next
write, which takes it along in one send, or until the end of the event loop's turn (after the
callbacks already due), so a streamed answer's head still goes out before its first page is
read from the store. The protocol (api.protocol) sends what is held as soon as an answer is
whole, and before asyncio closes a connection whose client shut its side. With a client in
another process, /healthz took 0.06 to 0.09 ms less, the lookup by id up to 0.15 ms
(docs/performance.md, section 3).
"""

from __future__ import annotations

import asyncio

from eventpipe.api.transport import Relay

# A response head is a few hundred bytes; a write this small is worth holding for what follows it.
HOLD_BYTES = 4096


class Cork(Relay):
    """`transport`, holding a small write until the next one, flush(), or the end of `loop`'s turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport)
        self._loop = loop
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._held:
            # The copy costs less than the send it saves: a body comes here in slices of 64 KiB at most
            # (api.flight).
            held, self._held = self._held, b""
            self._transport.write(held + bytes(data))
        elif len(data) <= HOLD_BYTES and not self._transport.is_closing():
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send what is held. A transport closed meanwhile is not written to: asyncio counts and logs such writes."""
        held, self._held = self._held, b""
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        # Held bytes are unsent bytes: the stall bound (api.protocol) and the reset of a cut answer
        # (api.transport) wait for them too.
        return len(self._held) + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = b""
        self._transport.abort()
