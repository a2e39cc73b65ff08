"""HTTP/1.1 through h11, with the two bounds uvicorn leaves out: open connections, and time to send a request.

uvicorn keeps every connection it accepts until the client closes it, and
never times out one whose request head or body stops halfway. 20,000 sockets
that each sent half a head took every file descriptor of `eventpipe up`: the
API stopped answering, and the embedded engine in the same process could no
longer insert (EMFILE). Here a connection beyond MAX_CONNECTIONS is closed as
it is accepted, and a request whose head and body are not all in within
READ_TIMEOUT_S of its first byte (or of the connection's start) gets 408 and
the connection is closed. Idle connections between requests are uvicorn's
keep-alive timeout's (5 s). Bytes that are not HTTP/1.x get the API's JSON
400, not uvicorn's plain text. Each connection closed by one of these bounds
is counted by reason (CLOSED_REASONS, eventpipe_http_connections_closed_total),
and what a client can cause at will is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import re
import resource
import sys
import termios
from typing import Any

import h11
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

from eventpipe.api.cork import Cork
from eventpipe.api.flow import PipelinedFlow, buffered
from eventpipe.api.stream import CUT_OFF
from eventpipe.api.transport import CutOff, reset
from eventpipe.telemetry.summary import ClientLog, on_loop_exception, server_summaries

# Far more clients than one API process on two cores serves at once; below
# what the process can open beside the embedded engine's own files.
MAX_CONNECTIONS = 1000
# A client that takes longer than this to send a request of this API (a head
# and at most a small JSON body) is stalled, not slow.
READ_TIMEOUT_S = 10.0
# A client that reads less than MIN_READ_BYTES of its answers in this long is gone or holding
# the connection: its socket is dropped (one that reads slowly but steadily is not).
WRITE_STALL_S = 60.0
# What a client must read of its answers within each WRITE_STALL_S to count as reading (about 1 KiB/s).
MIN_READ_BYTES = 64 * 1024
# Why the server closed a connection by one of its own bounds (keep-alive's idle close is not counted):
# over the cap (at accept), a request not all sent in time (408), bytes h11 cannot read as HTTP/1.0
# or 1.1 (400), answers left unread (dropped). Each connection is counted once, for the first.
CLOSED_REASONS = ("limit", "timeout", "malformed", "stalled")
# uvicorn's line for an app that returned with its answer begun and not ended: a bug's, but for an answer
# api.stream cut off on purpose, which has said why in a line or a count of its own.
INCOMPLETE = "ASGI callable returned without completing response."


def connection_limit() -> int:
    """MAX_CONNECTIONS, or a quarter of the process's file limit when that is lower."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(1, min(MAX_CONNECTIONS, soft // 4))


class Http1Connection(h11.Connection):
    """h11's server side, refusing a request line whose version is not 1.0 or 1.1, and reading an
    absolute-form target (`GET http://host/events`) as its path.

    h11 reads any digit.digit version and answers it as HTTP/1.1: "GET / HTTP/2.0"
    got a 200. Raised as h11's own protocol error, uvicorn answers it as it does
    other bytes that are not HTTP/1.x (send_400_response)."""

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            if event.http_version not in (b"1.0", b"1.1"):
                raise h11.RemoteProtocolError(f"HTTP/{event.http_version.decode('ascii')} is not HTTP/1.0 or 1.1")
            if ABSOLUTE_FORM.match(event.target):
                return origin_form(event)
        return event


# RFC 9112 3.2.2: a server MUST accept it, though clients send it to proxies; uvicorn took the whole URL for
# the path, so every such request got a 404.
ABSOLUTE_FORM = re.compile(rb"(?i)https?://")
AUTHORITY = re.compile(rb"([^/?]*)(.*)", re.DOTALL)


def origin_form(request: h11.Request) -> h11.Request:
    """The request with its absolute-form target cut to path and query, and its Host header the target's
    authority, which RFC 9112 3.2.2 says to use instead of the one sent."""
    # The authority ends at the first "/" or "?": a query may hold a "/" (http://h?next=/events).
    authority, rest = AUTHORITY.match(ABSOLUTE_FORM.sub(b"", request.target, count=1)).groups()  # type: ignore[union-attr]
    target = rest if rest.startswith(b"/") else b"/" + rest
    authority = authority.rpartition(b"@")[2]  # a user name is no part of Host
    if not authority:
        raise h11.RemoteProtocolError("an absolute-form request target without a host")
    headers = [(name, value) for name, value in request.headers if name != b"host"]
    return h11.Request(
        method=request.method,
        target=target,
        headers=[(b"host", authority), *headers],
        http_version=request.http_version,
    )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a bound on open connections and on the time a request takes to arrive."""

    max_connections = MAX_CONNECTIONS
    read_timeout_s = READ_TIMEOUT_S
    write_stall_s = WRITE_STALL_S
    closed: Counter | None = None
    _cork: Cork  # the connection's writes (api.cork), made with the connection
    summaries = server_summaries(MAX_CONNECTIONS)
    client_log = ClientLog(logging.getLogger("uvicorn.error"), summaries)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = CycleLog(self.client_log, self)  # type: ignore[assignment]
        # As uvicorn makes its own (h11's 16 KiB bound on an incomplete head unless configured), with the check.
        size = self.config.h11_max_incomplete_event_size
        self.conn = Http1Connection(h11.SERVER) if size is None else Http1Connection(h11.SERVER, size)
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._unsent = 0  # bytes the client had not read (_unread) when the stall timer was last armed
        self._counted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # What the request cycles write to and close: an answer cut off is reset, not ended (api.transport),
        # and a head goes out with its body (api.cork).
        self._cork = Cork(transport, self.loop)
        super().connection_made(CutOff(self._cork, self))  # type: ignore[arg-type]
        self.flow = PipelinedFlow(self.transport, self.conn)
        if len(self.connections) > self.max_connections:
            self._refuse()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._unsent = self._unread()
            self._stall = self.loop.call_later(self.write_stall_s, self._drop)

    def resume_writing(self) -> None:
        self._unstall()
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    @classmethod
    def loop_exception(cls, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The server's event-loop exception handler (summary.on_loop_exception with this server's count)."""
        on_loop_exception(cls.summaries["exhausted"], loop, context)

    def on_response_complete(self) -> None:
        # A whole answer goes now, not at the end of the loop's turn: a HEAD's or a 304's head is all of it.
        self._cork.flush()
        super().on_response_complete()
        self._watch()

    def eof_received(self) -> None:
        # asyncio closes the socket itself once this returns, past the cork: what it holds goes first. A
        # client that shut its side after a HEAD (`nc -N`) got nothing, as the answer was held until then.
        self._cork.flush()
        super().eof_received()

    def _reading(self) -> bool:
        """True while part of a request is in: a head begun (or a new connection), or a body not yet whole."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return True
        if state is not h11.IDLE:
            return False
        # Between requests, only once the next one has begun: idle is keep-alive's to close.
        return self.cycle is None or buffered(self.conn) > 0

    def _watch(self) -> None:
        if self.transport.is_closing() or not self._reading():
            self._disarm()
            self._idle()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout_s, self._expire)

    def _idle(self) -> None:
        """Between two requests, keep-alive's timer must run. uvicorn arms it when a response ends,
        but the rest of a body read after that (an answer sent before the body was in) cancels it
        and nothing arms it again: such a connection stayed open for good."""
        idle = self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE and self.cycle is not None
        if idle and self.timeout_keep_alive_task is None and not self.transport.is_closing():
            handler = self.timeout_keep_alive_handler
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, handler)

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._reading():
            return
        detail = f"the request was not all sent within {self.read_timeout_s:g} s"
        self._close_with("timeout", b"408 Request Timeout", "request_timeout", detail)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot read as a request, in the API's error shape, not plain text."""
        detail = "the request is not valid HTTP/1.0 or 1.1, or its head is over 16 KiB"
        self._close_with("malformed", b"400 Bad Request", "bad_request", detail)

    def _close_with(self, reason: str, status: bytes, error: str, detail: str) -> None:
        self._count(reason)
        state = self.conn.our_state
        if state is h11.SEND_BODY:
            reset(self.transport)  # an answer is half sent: nothing more can be said, and it must not look whole
            return
        if state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()  # this request was answered already: that answer still goes out whole
            return
        body = json.dumps({"error": error, "detail": detail}).encode()
        head = (
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()

    def _drop(self) -> None:
        self._stall = None
        unsent = self._unread()
        if unsent <= self._unsent - MIN_READ_BYTES:
            # It read: slow, not stalled. A page of megabytes drains below the mark that resumes writing
            # only once nearly all read, and a client at 20 KiB/s was cut off midway. A floor on what
            # counts, or 4 KiB a minute would hold a connection, an export's slot and its page for days.
            self._unsent = unsent
            self._stall = self.loop.call_later(self.write_stall_s, self._drop)
            return
        self._count("stalled")
        reset(self.transport)  # its answer is cut: a FIN would end an HTTP/1.0 body as if it were whole

    def _unread(self) -> int:
        """Bytes of answers the client has not taken: in the server's buffer, and in the kernel's not yet
        acknowledged by the client (which acknowledges only as it reads, once its own buffer is full)."""
        unread = self.transport.get_write_buffer_size()
        connection = self.transport.get_extra_info("socket")
        if connection is not None and hasattr(termios, "TIOCOUTQ"):
            with contextlib.suppress(OSError):
                queued = fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                unread += int.from_bytes(queued, sys.byteorder, signed=True)
        return unread

    def _refuse(self) -> None:
        # Closed before anything is read: no response, as no request came.
        self.transport.abort()
        self._count("limit")
        self.summaries["limit"]()

    def _count(self, reason: str) -> None:
        # Once per connection: one whose answers went unread may also time out a request before it is dropped.
        if self.closed is not None and not self._counted:
            self.closed.labels(reason).inc()
        self._counted = True


class CycleLog:
    """The server's log as one connection's request cycles write to it, less uvicorn's INCOMPLETE line for an
    answer api.stream cut off itself (an export past the memory bound, its key revoked, ClickHouse gone).
    api.stream has logged or counted why; uvicorn's line made a second ERROR of each, and of the memory
    bound's, which a client can cause at will, an ERROR for every export."""

    def __init__(self, log: ClientLog, owner: GuardedH11Protocol) -> None:
        self._log, self._owner = log, owner

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        cycle = self._owner.cycle
        if not (msg == INCOMPLETE and cycle is not None and CUT_OFF in cycle.scope):
            self._log.error(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def guarded(
    max_connections: int,
    read_timeout_s: float,
    write_stall_s: float = WRITE_STALL_S,
    closed: Counter | None = None,
) -> type[GuardedH11Protocol]:
    """The protocol class with these bounds, for one server (uvicorn makes a protocol per connection);
    `closed` counts the connections it closes itself, by reason (CLOSED_REASONS)."""
    summaries = server_summaries(max_connections)
    own = {
        "max_connections": max_connections,
        "read_timeout_s": read_timeout_s,
        "write_stall_s": write_stall_s,
        "closed": closed,
        "summaries": summaries,
        # uvicorn's logger, as H11Protocol takes it, once for the server rather than per connection.
        "client_log": ClientLog(logging.getLogger("uvicorn.error"), summaries),
    }
    return type("GuardedH11Protocol", (GuardedH11Protocol,), own)
