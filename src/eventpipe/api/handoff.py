"""The threads the read routes run on: each sync route body (its reads of the store and the answer it builds)
is handed to one of them, and the event loop awaits it.

FastAPI would run those bodies in anyio's worker threads. Its hand-off (a
capacity limiter, cancel scopes, a checkpoint, the backend's look-ups) costs
little when warm, but the API's code runs cold, after each read has filled the
caches with the store's data. Two apps on one 10M-event store in one process,
served over HTTP and read in turn, which of the two first alternating: the
all-time types, the lookup by id and the newest page took 0.05 to 0.32 ms less
each through these threads than through anyio's, in all nine of three runs. The
routes' own code and FastAPI's handling of them are unchanged: only the hop is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fastapi.routing import APIRoute

T = TypeVar("T")
# A thread with nothing to do for this long ends, and a later hand-off starts one. Longer than anyio's 10 s:
# the embedded engine keeps files open for each thread that has queried (api.export reuses its threads too).
IDLE_S = 60.0


class _Job(Generic[T]):
    """A call handed to a thread, and how the event loop learns its end. Only the loop's thread reads or
    sets `done`, `ended` and `waiter` (in run() and _settle), so they need no lock."""

    __slots__ = ("call", "context", "done", "ended", "loop", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, context: contextvars.Context, call: Callable[[], T]) -> None:
        self.loop = loop
        self.context = context
        self.call = call
        self.done: asyncio.Future[T] = loop.create_future()
        self.ended = False
        # Made once the request is cancelled: set when the call ends, so that run() returns no sooner.
        self.waiter: asyncio.Future[None] | None = None


class Handoff:
    """Up to `size` threads, started as calls need them: as many as the requests the API lets in at once
    (api.flight), so that an admitted request never waits for a thread. Named eventpipe-read-N, apart from
    the server's own eventpipe-api, in a profile or a thread dump."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._waiting = 0

    async def run(self, call: Callable[[], T]) -> T:
        """`call()` on one of the threads, in a copy of this context (the store's reads go by the caller
        it names: store.reader.CALLER). Cancelled, it still waits for the call to end: the thread cannot
        be stopped, and what the request holds (its seats) must be held as long as its work is."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(loop, contextvars.copy_context(), call)
        self._put(job)
        try:
            # Awaited as it is, not through shield(): a shield's outer future costs the answer another
            # turn of the event loop. Cancelling this cancels `job.done`, and _settle leaves it so.
            return await job.done
        except asyncio.CancelledError:
            if not job.ended:
                job.waiter = loop.create_future()
                while not job.waiter.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(job.waiter)
            raise

    def route_class(self) -> type[APIRoute]:
        """An APIRoute whose sync endpoints run here rather than in anyio's threads; async ones are left."""
        handoff = self

        class HandedOffRoute(APIRoute):
            def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
                super().__init__(
                    path, endpoint if inspect.iscoroutinefunction(endpoint) else handoff.wrap(endpoint), **kwargs
                )

        return HandedOffRoute

    def wrap(self, endpoint: Callable[..., T]) -> Callable[..., Any]:
        """`endpoint` as a coroutine function that runs it here. FastAPI reads the parameters through
        `__wrapped__`, so they, the answer's model and the OpenAPI document stay the endpoint's."""

        @functools.wraps(endpoint)
        async def handed_off(*args: Any, **kwargs: Any) -> T:
            return await self.run(functools.partial(endpoint, *args, **kwargs))

        return handed_off

    def _put(self, job: _Job[Any]) -> None:
        """Queue `job`, and start a thread when the jobs waiting outnumber the idle threads (in a burst, an
        idle thread takes one job, not all). Under the lock, as the threads' exit is: a thread that timed
        out as the job came either sees it waiting and takes it, or was gone before it was counted."""
        with self._lock:
            self._jobs.put(job)
            self._waiting += 1
            if self._waiting <= self._idle or self._threads >= self._size:
                return
            self._threads += 1
            self._idle += 1  # idle until it takes a job, as the next put must count it
        threading.Thread(target=self._serve, name=f"eventpipe-read-{self._threads}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._waiting > 0:
                        continue
                    self._threads -= 1
                    self._idle -= 1
                return
            with self._lock:
                self._waiting -= 1
                self._idle -= 1
            try:
                outcome: tuple[bool, Any] = (True, job.context.run(job.call))
            except StopIteration as exc:
                # A future refuses StopIteration (TypeError in _settle), and the request waited for good,
                # holding its seats. Raised as what it is: a bug of the route, which answers 500.
                outcome = (False, RuntimeError(f"a read route raised StopIteration: {exc!r}"))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request, raised there
                outcome = (False, exc)
            with self._lock:
                self._idle += 1
            # A loop closed meanwhile (the server stopped) has no one awaiting the answer.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job, outcome)


def _settle(job: _Job[Any], outcome: tuple[bool, Any]) -> None:
    job.ended = True
    # Cancelled, the request is not waiting for the outcome: an exception set there would be logged
    # as never retrieved.
    if not job.done.cancelled():
        ok, value = outcome
        if ok:
            job.done.set_result(value)
        else:
            job.done.set_exception(value)
    if job.waiter is not None:
        job.waiter.set_result(None)
