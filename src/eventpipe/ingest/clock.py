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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
