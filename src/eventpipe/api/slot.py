"""How many exports run at once: at most a number in the process, and half of it (at least one) per key.

An export holds a page being sent and the next one read ahead (10 to 18 MiB
each, 8 MiB pages of Python objects and their text), a reading thread, and
the engine's files for that thread, for as long as its client takes to read:
100 clients that read nothing took 1.8 GiB, and 200 every file the process
could open, failing the worker's inserts. Past the process's bound the answer
is 503 `busy`; past a key's, 429, its own doing, so one key cannot take every slot.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from eventpipe.api.error import ApiError

# Seconds a client is told to wait: an export of a day of a busy store takes a few.
RETRY_AFTER_S = 10


class Slots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.per_key = max(1, total // 2)
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def take(self, key: str) -> Callable[[], None]:
        """A slot for one export of `key`, and the call that gives it back (idempotent); ApiError when none."""
        with self._lock:
            if self._held[key] >= self.per_key:
                raise ApiError(
                    429,
                    "too_many_exports",
                    f"this key has {self._held[key]} exports running, the most one key may: "
                    "let one finish (or close it), then export again",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
            if self._held.total() >= self.total:
                raise ApiError(
                    503,
                    "busy",
                    f"{self.total} exports are running, the most this API runs at once "
                    "(EVENTPIPE_API_MAX_EXPORTS): retry later",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
            self._held[key] += 1
        given = False

        def give_back() -> None:
            nonlocal given
            with self._lock:
                if not given:
                    given = True
                    self._held[key] -= 1
                    if not self._held[key]:
                        del self._held[key]

        return give_back
