"""An answer streamed as it is produced: complete, or visibly cut off.

The body is sent with HTTP/1.1 chunked encoding. When producing it fails
midway (ClickHouse stops answering in the middle of an export), the status
line has long been sent, so there is no error status to give: the answer is
cut off instead. The connection closes without the chunked encoding's last
chunk, which HTTP clients report as an error (curl exits 18, httpx and
requests raise, http.client's read() too), so a failed export does not look
complete; but for a reader that iterates over http.client's lines, which end
quietly at the cut (README.md says so).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from eventpipe.api.error import HEAVY
from eventpipe.errors import EventpipeError, HeavyReadError, RetryableStorageError, RevokedError

log = logging.getLogger(__name__)

# Set in the scope by app.HeadAsGet on a HEAD answered by a GET route: its
# body would be thrown away, so a stream does not produce it.
HEAD_ONLY = "eventpipe.head_only"
# Set in the scope when an answer is cut off, to when (time.perf_counter()) and the status its failure would
# have had before the status line: that said 200, but its client got a failed transfer, so api.metrics counts
# it by that status, a 5xx for ClickHouse's failure, a 403 for a key revoked or narrowed meanwhile (an
# admin's change is no outage of the API).
CUT_OFF = "eventpipe.cut_off"


class Stream(StreamingResponse):
    """Chunks from a sync iterator, each made on a worker thread only when the
    one before has been handed to the server: a client that reads slowly
    holds the producer at its next chunk (the server's write buffer pauses
    the send), and one that goes away stops it at that chunk (Starlette
    cancels the stream on the client's disconnect)."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        media_type: str,
        headers: dict[str, str],
        what: str,
        ended: Callable[[], None] | None = None,
        stopping: Callable[[], None] | None = None,
    ) -> None:
        self._source = Closing(chunks)
        super().__init__(self._source, media_type=media_type, headers=headers)
        self._what = what  # names the answer in the log
        self._ended = ended  # called once the answer has ended, however
        # Called first, without waiting: tells a producer busy making the next chunk to give up.
        self._stopping = stopping
        self._cut_off: tuple[float, int] | None = None  # when producing the answer failed, and its status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope.get(HEAD_ONLY):
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await super().__call__(scope, receive, send)
        finally:
            if self._cut_off is not None:
                scope[CUT_OFF] = self._cut_off
            # However the answer ended (a client gone cancels it), the producer's own cleanup runs
            # now, not whenever the garbage collector gets to it: an export stops reading ahead.
            if self._stopping is not None:
                # Closing waits for the chunk being made, which an export's sparse walk takes minutes over.
                self._stopping()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._source.close)
            if self._ended is not None:
                self._ended()

    async def listen_for_disconnect(self, receive: Receive) -> None:
        await super().listen_for_disconnect(receive)
        if self._stopping is not None:
            # The client is gone. The stream's cancellation waits for the chunk being made, on its thread,
            # which a sparse export's walk takes minutes over: told now, it gives up at its next query.
            self._stopping()

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        try:
            async for chunk in self.body_iterator:
                # Written in slices by api.flight, as every answer is: the client takes each before the next.
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
        except Exception as exc:  # whatever failed, the answer must end incomplete
            self._cut_off = (time.perf_counter(), _status(exc))
            # No last chunk: the server closes the connection and the client sees a cut-off transfer.
            if isinstance(exc, HeavyReadError):
                # A later page past the memory bound: the export walks oldest first, and the newest windows
                # meet the most unmerged parts. Any key can ask for it while merges are behind.
                HEAVY()
            else:
                # A key revoked or narrowed meanwhile is an admin's change, not a failure to alert on.
                level = logging.WARNING if isinstance(exc, RevokedError) else logging.ERROR
                log.log(level, "%s cut off after %d bytes: %s", self._what, sent, exc, exc_info=not _expected(exc))
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Closing:
    """An iterator of chunks that can be closed from any thread, once the chunk being made is done
    (a generator cannot be closed while it runs on another thread)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._lock = threading.Lock()

    def __iter__(self) -> Closing:
        return self

    def __next__(self) -> bytes:
        with self._lock:
            return next(self._chunks)

    def close(self) -> None:
        with self._lock:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()


def _status(exc: Exception) -> int:
    """The status `exc` gets from a route that fails before its answer begins (api.error)."""
    if isinstance(exc, RevokedError):
        return 403
    return 503 if isinstance(exc, RetryableStorageError) else 500


def _expected(exc: Exception) -> bool:
    """A storage failure or a revoked key is logged by its message, as the other routes log them; anything
    else is a bug."""
    return isinstance(exc, EventpipeError)
