"""The worker's clock (ingest.clock) and its marks' times (ingest.mark) under a wall clock that steps."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Gauge

from eventpipe.errors import RetryableStorageError
from eventpipe.ingest.clock import Clock, Skew
from eventpipe.ingest.mark import Marker

NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


def test_readings_hold_at_the_highest_through_a_step_back_and_follow_once_real_time_passes_it() -> None:
    wall = [NOW_MS]
    clock = Clock(lambda: wall[0])
    assert clock.now_ms() == NOW_MS
    wall[0] = NOW_MS - HOUR_MS  # NTP steps the clock back an hour
    assert clock.now_ms() == NOW_MS
    wall[0] = NOW_MS + 5
    assert clock.now_ms() == NOW_MS + 5
    wall[0] += HOUR_MS  # forward steps are followed: a forward step is only late receive times
    assert clock.now_ms() == NOW_MS + 5 + HOUR_MS


def test_a_raised_floor_holds_readings_above_it() -> None:
    clock = Clock(lambda: NOW_MS)
    clock.raise_to(NOW_MS + HOUR_MS)
    assert clock.now_ms() == NOW_MS + HOUR_MS
    clock.raise_to(NOW_MS)  # never lowered
    assert clock.now_ms() == NOW_MS + HOUR_MS


def test_marks_are_written_in_order_and_never_say_complete_before_a_time_already_said() -> None:
    wall, tick = [NOW_MS], [0.0]
    clock = Clock(lambda: wall[0])
    marker = Marker("w1", clock=clock, tick=lambda: tick[0])
    start = marker.start()
    first = marker.due(clock.now_ms())
    wall[0] -= HOUR_MS
    tick[0] += 1.0  # due by the monotonic tick, which no step moves
    received = clock.now_ms()  # a message received after the step
    second = marker.due(received)
    assert len(first) == len(second) == 1, "a mark a second, step or not"
    assert start.written < first[0].written < second[0].written
    assert received >= first[0].complete_before, "stamped before what a mark already promised"
    assert marker.retired().written > second[0].written


def test_a_marker_resumed_after_its_last_stored_mark_writes_after_it() -> None:
    # Restarted under a step back: the last mark stored (its retirement, or a mark of a run a clock ahead)
    # is newer than the wall clock. Its next marks must win over it, and promise nothing below it.
    clock = Clock(lambda: NOW_MS - HOUR_MS)
    marker = Marker("w1", clock=clock, tick=lambda: 0.0)
    marker.resume(written_ms=NOW_MS, complete_before_ms=NOW_MS - 10)
    start = marker.start()
    assert start.written > NOW_MS
    assert start.complete_before >= NOW_MS
    assert clock.now_ms() >= NOW_MS


def test_skew_is_the_workers_clock_minus_the_servers_at_the_middle_of_the_read_once_a_minute() -> None:
    wall, tick, reads = [NOW_MS], [0.0], []
    gauge = Gauge("skew", "test", registry=CollectorRegistry())

    def server_ms() -> int:
        reads.append(1)
        wall[0] += 20  # the query takes 20 ms of the worker's clock
        return NOW_MS - 40_000 + 10  # the server read its clock 10 ms in, 40 s behind the worker

    skew = Skew(Clock(lambda: wall[0]), server_ms, gauge, tick=lambda: tick[0])
    skew.measure()
    assert gauge._value.get() == 40.0
    tick[0] += 59.0
    skew.measure()
    assert len(reads) == 1, "once a minute: a query of its own"
    tick[0] += 1.0
    skew.measure()
    assert len(reads) == 2


def test_a_skew_not_measured_reads_as_unknown_and_a_failed_read_leaves_the_last() -> None:
    gauge = Gauge("skew", "test", registry=CollectorRegistry())
    server: list[int | None] = [NOW_MS]
    tick = [0.0]

    def read() -> int:
        if server[0] is None:
            raise RetryableStorageError("connection refused")
        return server[0]

    skew = Skew(Clock(lambda: NOW_MS), read, gauge, tick=lambda: tick[0])
    assert math.isnan(gauge._value.get()), "not 0: never measured is not in step"
    skew.measure()
    assert gauge._value.get() == 0.0
    server[0], tick[0] = None, 60.0
    skew.measure()
    assert gauge._value.get() == 0.0


def test_the_skew_is_of_the_clock_that_stamps_so_a_worker_held_ahead_shows() -> None:
    # Its wall clock ran an hour ahead, then was set right: the stamps hold at the highest reading.
    wall = [NOW_MS + HOUR_MS]
    clock = Clock(lambda: wall[0])
    clock.now_ms()
    wall[0] = NOW_MS
    gauge = Gauge("skew", "test", registry=CollectorRegistry())
    Skew(clock, lambda: NOW_MS, gauge, tick=lambda: 0.0).measure()
    assert gauge._value.get() == HOUR_MS / 1000
