"""The API server's one-line-a-minute summaries of what clients can repeat at will (telemetry.summary.Summary)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventpipe.telemetry.summary import Summary

EVERY_S = 0.2


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "eventpipe.telemetry.summary"]


async def until_lines(caplog: pytest.LogCaptureFixture, n: int) -> None:
    """Waits for the n-th line, up to 50 intervals: a loaded machine runs timers late, never early."""
    for _ in range(500):
        if len(lines(caplog)) >= n:
            return
        await asyncio.sleep(EVERY_S / 10)


def test_a_burst_is_one_line_at_once_and_its_total_one_interval_later(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    summary = Summary("saw {n} thing(s)", every_s=EVERY_S)

    async def burst() -> None:
        for _ in range(50):
            summary()
        assert lines(caplog) == ["saw 1 thing(s) (at most one such line a minute)"], "the first at once"
        await until_lines(caplog, 2)  # the rest, one interval later, with no further call
        # A second burst, a whole interval after the last line (however late the
        # loop ran its timer): its first is at once again, its rest one interval later.
        await asyncio.sleep(EVERY_S * 1.5)
        for _ in range(3):
            summary()
        assert len(lines(caplog)) == 3, "the second burst's first at once"
        await until_lines(caplog, 4)

    asyncio.run(burst())
    assert lines(caplog) == [
        "saw 1 thing(s) (at most one such line a minute)",
        "saw 49 thing(s) (at most one such line a minute)",  # not left waiting for the next burst
        "saw 1 thing(s) (at most one such line a minute)",
        "saw 2 thing(s) (at most one such line a minute)",
    ]


def test_nothing_more_is_logged_when_nothing_more_happened(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    summary = Summary("saw {n} thing(s)", every_s=EVERY_S)

    async def one() -> None:
        summary()
        await asyncio.sleep(EVERY_S * 2)

    asyncio.run(one())
    assert lines(caplog) == ["saw 1 thing(s) (at most one such line a minute)"]
