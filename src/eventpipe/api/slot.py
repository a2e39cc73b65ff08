"""How many of one kind of answer run at once: at most a number in the process, and a share of it per key.

Exports (api.export) and every keyed request (api.flight) are bounded so. An
answer holds memory and a thread for as long as its client takes to read it:
100 exports that read nothing took 1.8 GiB, and 100 concurrent feed pages of
one key held every thread of the pool, so that /readyz took 27 s. Past the
process's bound the answer is 503 `busy`; past a key's share, 429, its own
doing, so one key cannot take every slot.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from eventpipe.api.error import ApiError


class Slots(Collector):
    """`total` at once, `per_key` of them for one key; `what` names them in errors ("exports"),
    `setting` is the environment variable of `total`, `retry_after_s` what a refused client is told to wait.
    Collected, the slots each key holds now: who to narrow when others are answered 503 `busy` (a key's
    request rate does not say it: a partner reading 4 exports slowly sends a request a minute)."""

    def __init__(self, total: int, per_key: int, what: str, setting: str, retry_after_s: int) -> None:
        self.total, self.per_key = total, min(per_key, total)
        self._what, self._setting, self._retry_after = what, setting, {"Retry-After": str(retry_after_s)}
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def take(self, key: str) -> Callable[[], None]:
        """A slot for `key`, and the call that gives it back (idempotent); ApiError when none."""
        with self._lock:
            if self._held[key] >= self.per_key:
                raise ApiError(
                    429,
                    f"too_many_{self._what}",
                    f"this key has {self._held[key]} {self._what} running, the most one key may at once: "
                    "let one finish (or close it), then try again",
                    dict(self._retry_after),
                )
            if self._held.total() >= self.total:
                raise ApiError(
                    503,
                    "busy",
                    f"{self.total} {self._what} are running, the most this API runs at once "
                    f"({self._setting}): retry later",
                    dict(self._retry_after),
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

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"eventpipe_api_{self._what}_running",
            f"The {self._what} running now, by API key name ({self._setting} bounds them all).",
            labels=["key"],
        )
        with self._lock:
            held = dict(self._held)
        for key, count in sorted(held.items()):
            family.add_metric([key], count)
        yield family
