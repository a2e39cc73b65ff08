"""Requests per minute per key name: at most N requests in any 60 seconds, exactly, in this process.

A sliding window rather than a token bucket: a bucket of N tokens refilled at
N a minute lets 2N through in the minute after an idle one, and "120 requests
per minute" should mean what it says. The window remembers the times of the
last N requests it let through, in a ring of N floats (8 bytes each): a request
passes when the N-th most recent of them is 60 s old or more. Refused requests are not
remembered, so a client that waits as Retry-After says gets through. Pure
policy with an injected clock; the API's auth applies it.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable, Collection

WINDOW_S = 60.0


class Throttle:
    """The windows of every limited key name. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, name: str, per_minute: int | None) -> float:
        """0 if a request of `name` may pass now (and it is counted); else the seconds until one may."""
        if per_minute is None:
            return 0.0
        now = self._clock()
        with self._lock:
            window = self._windows.get(name)
            if window is None or window.capacity < per_minute:
                # A changed limit keeps the recent requests: editing the keys file is no way to reset a window.
                window = self._windows[name] = _Window(per_minute, window.times() if window else [])
            return window.admit(now, per_minute)

    def give_back(self, name: str) -> None:
        """Forget the most recent request `admit` let through for `name`: one then refused for another
        reason (no seat for it, no export slot). Counted, it used up the key's rate while it was refused,
        though a client waiting as Retry-After says must get through. With requests of one key at once
        another of its last admissions may go instead: the count is exact, a time off by milliseconds."""
        with self._lock:
            window = self._windows.get(name)
            if window is not None:
                window.give_back()

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the windows of every other name (keys removed from the keys file)."""
        with self._lock:
            for name in set(self._windows) - set(names):
                del self._windows[name]


def retry_after(wait_s: float) -> int:
    """A wait as the whole seconds Retry-After takes: rounded up, so a client that waits that long passes."""
    return max(1, math.ceil(wait_s))


class _Window:
    """The times of the last `capacity` requests let through; a lowered limit keeps the larger capacity."""

    def __init__(self, capacity: int, recent: list[float]) -> None:
        kept = recent[-capacity:]
        # Oldest first; -inf stands for "no request yet".
        self._ring = array("d", [-math.inf] * (capacity - len(kept)) + kept)
        self._next = 0  # the slot of the oldest remembered request, overwritten by the next one
        self.capacity = capacity

    def admit(self, now: float, limit: int) -> float:
        # The limit-th most recent request: once it is a minute old, the last minute holds fewer than `limit`.
        nth = self._ring[(self._next - limit) % self.capacity]
        if now - nth < WINDOW_S:
            return nth + WINDOW_S - now
        self._ring[self._next] = now
        self._next = (self._next + 1) % self.capacity
        return 0.0

    def give_back(self) -> None:
        # The slot the last admission wrote; what it overwrote, the oldest, was a minute old or more.
        self._next = (self._next - 1) % self.capacity
        self._ring[self._next] = -math.inf

    def times(self) -> list[float]:
        """The remembered request times, oldest first."""
        ordered = self._ring[self._next :].tolist() + self._ring[: self._next].tolist()
        return [moment for moment in ordered if moment != -math.inf]
