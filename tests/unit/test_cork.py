"""A connection's writes: an answer's head goes out with its body in one send, nothing is held past the
event loop's step that wrote it, and held bytes count as unsent until they are sent."""

from __future__ import annotations

import asyncio

from eventpipe.api.cork import HOLD_BYTES, Cork


class Wire(asyncio.Transport):
    """A transport that records each send, as the socket would get it."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_a_head_goes_out_with_the_body_that_follows_it_in_one_send() -> None:
    async def scenario() -> list[bytes]:
        wire = Wire()
        cork = Cork(wire, asyncio.get_running_loop())
        cork.write(HEAD)
        cork.write(b"{}")
        cork.write(b"")  # h11's end of a Content-Length body
        await asyncio.sleep(0)
        return wire.sends

    assert asyncio.run(scenario()) == [HEAD + b"{}"]


def test_a_write_alone_goes_out_once_the_loop_step_that_wrote_it_ends() -> None:
    async def scenario() -> tuple[list[bytes], int, list[bytes], int]:
        wire = Wire()
        cork = Cork(wire, asyncio.get_running_loop())
        cork.write(HEAD)  # a streamed answer's head, its first page not read yet
        held = list(wire.sends), cork.get_write_buffer_size()
        await asyncio.sleep(0)
        return *held, wire.sends, cork.get_write_buffer_size()

    before, unsent, after, left = asyncio.run(scenario())
    assert (before, unsent) == ([], len(HEAD))
    assert (after, left) == ([HEAD], 0)


def test_a_large_write_is_not_held_and_a_memoryview_is_sent_whole() -> None:
    async def scenario() -> list[bytes]:
        wire = Wire()
        cork = Cork(wire, asyncio.get_running_loop())
        page = memoryview(b"x" * (HOLD_BYTES + 1))
        cork.write(page)
        sent = list(wire.sends)
        cork.write(b"0\r\n\r\n")
        cork.write(page)
        return sent + wire.sends

    big = b"x" * (HOLD_BYTES + 1)
    assert asyncio.run(scenario()) == [big, big, b"0\r\n\r\n" + big]


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        closed, aborted = Wire(), Wire()
        first, second = Cork(closed, loop), Cork(aborted, loop)
        first.write(HEAD)
        first.close()
        second.write(HEAD)
        second.abort()
        await asyncio.sleep(0)
        return closed.sends, aborted.sends

    closed, aborted = asyncio.run(scenario())
    assert closed == [HEAD]
    assert aborted == []  # a reset answer is cut: nothing more may follow it


def test_nothing_is_written_to_a_connection_closed_while_a_write_was_held() -> None:
    async def scenario() -> list[bytes]:
        wire = Wire()
        cork = Cork(wire, asyncio.get_running_loop())
        cork.write(HEAD)
        wire.closing = True  # the client went: asyncio counts and logs writes to a lost connection
        await asyncio.sleep(0)
        return wire.sends

    assert asyncio.run(scenario()) == []
