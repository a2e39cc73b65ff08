"""The read routes' threads: a call runs as the request that made it, as many at once as there are threads,
and a request that is cancelled still holds on until its call has ended."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading

import pytest

from eventpipe.api.handoff import Handoff

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_a_call_sees_the_requests_context_and_its_error_is_raised_in_the_request() -> None:
    async def scenario() -> None:
        handoff = Handoff(2)
        WHO.set("key-a")
        assert await handoff.run(WHO.get) == "key-a"

        def failing() -> None:
            raise LookupError("no such event")

        with pytest.raises(LookupError, match="no such event"):
            await handoff.run(failing)

    asyncio.run(scenario())


def test_a_burst_runs_at_once_up_to_the_size_and_the_rest_waits_its_turn() -> None:
    async def scenario() -> None:
        handoff = Handoff(4)
        # Each call waits for all four: with fewer threads than calls in the burst, none would return.
        meet = threading.Barrier(4, timeout=10)
        assert await asyncio.gather(*(handoff.run(meet.wait) for _ in range(4))) is not None
        # Past the size, calls queue and still all run.
        done = await asyncio.wait_for(asyncio.gather(*(handoff.run(lambda: 1) for _ in range(20))), 10)
        assert done == [1] * 20
        assert sum(thread.name.startswith("eventpipe-read-") for thread in threading.enumerate()) >= 4

    asyncio.run(scenario())


def test_a_cancelled_request_ends_only_once_its_call_has() -> None:
    async def scenario() -> None:
        handoff = Handoff(1)
        release, started = threading.Event(), threading.Event()

        def slow() -> str:
            started.set()
            release.wait(10)
            return "read"

        request = asyncio.ensure_future(handoff.run(slow))
        while not started.is_set():
            await asyncio.sleep(0.01)
        request.cancel()
        await asyncio.sleep(0.1)
        # Its seats are released when it ends: ended now, more reads than seats would run at once.
        assert not request.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, 10)

    asyncio.run(scenario())


def test_a_request_cancelled_twice_still_waits_and_its_calls_failure_is_not_reported_as_lost() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
        handoff = Handoff(1)
        release, started = threading.Event(), threading.Event()

        def failing() -> None:
            started.set()
            release.wait(10)
            raise LookupError("the store went away")

        request = asyncio.ensure_future(handoff.run(failing))
        while not started.is_set():
            await asyncio.sleep(0.01)
        request.cancel()
        await asyncio.sleep(0.05)
        request.cancel()  # a server stopping cancels again: the seats must still wait for the thread
        await asyncio.sleep(0.05)
        assert not request.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, 10)
        # The failure had nobody to go to: asyncio would log "exception was never retrieved" for it.
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0)
        return reported

    assert asyncio.run(scenario()) == []


def test_a_call_that_raises_stopiteration_fails_its_request_rather_than_hanging_it() -> None:
    async def scenario() -> None:
        handoff = Handoff(1)

        def exhausted() -> None:
            next(iter(()))

        # A future cannot take StopIteration: the request waited for good, and held its seats.
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(handoff.run(exhausted), 10)

    asyncio.run(scenario())
