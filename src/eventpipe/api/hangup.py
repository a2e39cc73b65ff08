"""A client's disconnect heard while a sync route works, before its answer starts.

Starlette listens for a disconnect only once an answer streams (api.stream): until then a sync route
works on, on its thread, for a client that may be gone. The export reads its first page there, and a
filter that keeps nothing reads every window of the store for it (10.3M events: 11 s, holding the
export's slot and its key's lane; minutes at 100M) for a client that left at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

import anyio.from_thread
from starlette.types import Receive


class Hangup:
    """Sets `stopped` if the client disconnects while the block runs. Entered on a sync route's thread
    (anyio's worker), whose event loop reads the client's messages meanwhile. The route takes no body
    (api.param.only_known read what there was), so what this reads is the disconnect or nothing."""

    def __init__(self, receive: Receive, stopped: threading.Event) -> None:
        self._receive, self._stopped = receive, stopped
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Hangup:
        self._task = anyio.from_thread.run_sync(self._start)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        # Ended before the answer starts: its stream listens for the disconnect from then on, alone.
        anyio.from_thread.run(self._end)

    def _start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._stopped.set()

    async def _end(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
