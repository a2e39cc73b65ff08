"""Stored dead letters by replay status, as a gauge in the API's metrics (served on its metrics listener).

Counted in ClickHouse (ids only, no payload), at most once a minute whatever
the scrape rate: a backlog of letters nobody replays grows over hours, and
EventpipeDeadLettersPending looks at hours. Counted on a thread of its own,
never in the scrape: the metrics listener answers every scrape from one
thread, which in `eventpipe up` also serves the worker's metrics, and a count
waiting on a slow ClickHouse held both past Prometheus' timeout, so a healthy
worker looked down. A scrape reads the last counts (none before the first).
"""

from __future__ import annotations

import logging
import math
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
        self._at = -math.inf  # when the last count began: a failed one waits its max age too
        self._counting: threading.Thread | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without this, registering would call collect(), and query ClickHouse, at start.
        yield GaugeMetricFamily(NAME, HELP, labels=["status"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP, labels=["status"])
        counts = self._current()
        if counts is not None:  # not counted yet, or ClickHouse never answered: no samples, rather than a wrong 0
            for status in STATUSES:
                family.add_metric([status], counts.get(status, 0))
        yield family

    def _current(self) -> dict[str, int] | None:
        """The last counts; a new count begun when they are older than the max age and none is under way."""
        with self._lock:
            due = time.monotonic() - self._at >= self._max_age_s
            if due and (self._counting is None or not self._counting.is_alive()):
                self._at = time.monotonic()
                self._counting = threading.Thread(target=self._refresh, name="eventpipe-backlog", daemon=True)
                self._counting.start()
            return self._counts

    def _refresh(self) -> None:
        try:
            counts = self._count()
        except StorageError as exc:
            log.warning("cannot count dead letters by status: %s", exc)
            return  # the last known counts stay, until ClickHouse answers again
        with self._lock:
            self._counts = counts

    def wait(self, timeout: float | None = None) -> None:
        """Until the count under way, if any, has ended (for tests: a scrape never waits for it)."""
        counting = self._counting
        if counting is not None:
            counting.join(timeout)
