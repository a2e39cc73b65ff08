"""The worker's wall clock, which never goes back.

Receive times, the instants its marks say everything before was committed,
and the marks' own order (worker_marks keeps each worker's mark with the
greatest `written`) all come from it. The feed's complete_until promises that
no event received before it is still to come. A clock stepped back (NTP
correcting a fast clock, a VM resumed and corrected) stamped the events that
followed before a complete_until already served: an attack stepped a worker
back an hour and 2,997 events came with receive times before it; the old mark
kept winning by its later `written`, or, after a step forward and back, the
worker's real marks lost to it. Held at its highest reading instead, the clock
stamps what arrives during a step with that reading until real time passes it:
receive times are late by at most the step, never out of order, and
complete_until waits, rather than says too much. Its floor at a start is the
worker's newest mark, so a restart after a step back does not go back either.
How often things happen is timed with time.monotonic, which no step moves.

The worker's wall clock is also compared with the ClickHouse server's
(eventpipe_clock_skew_seconds, alert EventpipeClockSkew): the server judges
retention by its own clock against receive times the worker stamped, so a
worker days behind stored acknowledged rows the server deleted at once (an
attack: about 739 dead letters gone so), and its receive times decide which
timestamps count as too far ahead. Only machines apart can disagree: the
processes of one host share its clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import Gauge

from eventpipe.errors import StorageError

log = logging.getLogger(__name__)

# The server's clock is read at most this often: a query of its own.
SKEW_EVERY_S = 60.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Clock:
    """Epoch milliseconds, never less than any reading before, nor than the floor it was raised to."""

    def __init__(self, wall_ms: Callable[[], int] = _wall_ms) -> None:
        self._wall_ms = wall_ms
        self._floor = 0
        self._lock = threading.Lock()  # read by paho's network thread and the flusher

    def now_ms(self) -> int:
        with self._lock:
            self._floor = max(self._floor, self._wall_ms())
            return self._floor

    def raise_to(self, floor_ms: int) -> None:
        """No reading from now on is below `floor_ms` (a time this worker stored before, as a mark)."""
        with self._lock:
            self._floor = max(self._floor, floor_ms)


class Skew:
    """The worker's clock, the one it stamps receive times with, minus the server's (`server_ms`, read between
    two readings of the worker's, whose middle it is taken at), into `gauge` in seconds, at most every
    SKEW_EVERY_S. The stamping clock, not the wall: a worker that ran ahead holds its stamps there after its
    wall clock is set right, until real time catches up, and that must show too."""

    def __init__(
        self, clock: Clock, server_ms: Callable[[], int], gauge: Gauge, tick: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock, self._server_ms, self._gauge, self._tick = clock, server_ms, gauge, tick
        self._next_s = -float("inf")
        self._failed: set[type[StorageError]] = set()
        gauge.set(float("nan"))  # not measured yet: not "in step"

    def measure(self) -> float | None:
        """The skew in seconds when it was due and read now; None when not due or not read."""
        if self._tick() < self._next_s:
            return None
        self._next_s = self._tick() + SKEW_EVERY_S
        sent = self._clock.now_ms()
        try:
            server = self._server_ms()
        except StorageError as exc:
            # Said once a kind: a grant refused would leave the gauge unset for good, and the alert blind.
            if type(exc) not in self._failed:
                self._failed.add(type(exc))
                log.warning("could not read ClickHouse's clock to compare this worker's with: %s", exc)
            return None
        answered = self._clock.now_ms()
        skew = ((sent + answered) / 2 - server) / 1000
        self._gauge.set(skew)
        return skew
