"""Stored dead letters by replay status, as a gauge in the API's metrics (served on its metrics listener).

Counted in ClickHouse (ids only, no payload), at most once a minute whatever
the scrape rate: a backlog of letters nobody replays grows over hours, and
EventpipeDeadLettersPending looks at hours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from eventpipe.errors import StorageError
from eventpipe.store.status import STATUSES

log = logging.getLogger(__name__)
NAME = "eventpipe_dead_letters_by_status"
HELP = "Dead letters stored, by replay status: pending (never tried), failed (a replay still refused it), replayed."


class Backlog(Collector):
    def __init__(self, count: Callable[[], dict[str, int]], max_age_s: float = 60.0) -> None:
        self._count = count
        self._max_age_s = max_age_s
        self._counts: dict[str, int] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without this, registering would call collect(), and query ClickHouse, at start.
        yield GaugeMetricFamily(NAME, HELP, labels=["status"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP, labels=["status"])
        counts = self._current()
        if counts is not None:  # ClickHouse not answering: no samples, rather than a wrong 0
            for status in STATUSES:
                family.add_metric([status], counts.get(status, 0))
        yield family

    def _current(self) -> dict[str, int] | None:
        with self._lock:
            if self._counts is None or time.monotonic() - self._at >= self._max_age_s:
                try:
                    self._counts = self._count()
                except StorageError as exc:
                    log.warning("cannot count dead letters by status: %s", exc)
                    return self._counts  # the last known counts, until ClickHouse answers again
                self._at = time.monotonic()
            return self._counts
