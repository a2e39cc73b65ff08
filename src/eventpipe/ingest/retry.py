"""The worker's storage writes, tried until they succeed: backoff, poison isolation, the shutdown deadline.

Nothing a write holds is acknowledged while it fails (ingest.worker), so a
retry only holds acknowledgements back; past the shutdown deadline the write is
abandoned and what it held stays with the broker, which redelivers it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from eventpipe.config import Settings
from eventpipe.errors import EventpipeError, RetryableStorageError, StorageError, UnknownStorageError
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.policy import Backoff
from eventpipe.store.client import named

log = logging.getLogger(__name__)
T = TypeVar("T")


class Abandoned(EventpipeError):
    """Shutdown deadline passed while storage still failed; the batch stays unacked."""


# Consecutive unrecognised failures, with the store taking other rows, before a batch
# is bisected for poison rows: long enough to ride out a blip, short enough
# that one bad row does not hold the pipe for minutes.
POISON_AFTER = 5


def _kind(exc: StorageError) -> str:
    if isinstance(exc, UnknownStorageError):
        return "unknown"
    if isinstance(exc, RetryableStorageError):
        return "retry"
    return "halt"


class Retrier:
    """Runs a write until it succeeds, counting failures and the halt in the worker's metrics."""

    def __init__(self, settings: Settings, takes_writes: Callable[[], bool], metrics: IngestMetrics) -> None:
        """`takes_writes` says whether the store takes a known-good row (Writer.takes_writes)."""
        self._settings = settings
        self._takes_writes = takes_writes
        self._metrics = metrics
        self._backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        # Which store and which setting, on every failure: a halt (a rotated password, a wrong database)
        # is fixed in that variable, and ClickHouse's own message names neither.
        self._store = named(settings.resolved_clickhouse_dsn, settings.clickhouse_dsn_setting)
        self._wake = threading.Event()
        # Set once, by a stop: from then on a failing write gives up at this time.monotonic().
        self._deadline: float | None = None

    def stop_by(self, deadline: float) -> None:
        """Give up retrying at `deadline` (time.monotonic()), and end the wait of a retry now."""
        self._deadline = deadline
        self._wake.set()

    def run(self, write: Callable[[bool], T], isolating: bool = True) -> T:
        """Call write(isolate_unknown) until it succeeds; back off between failures.

        An unrecognised error that repeats while the store takes a known-good
        row is taken for poison in the data, and the next attempts isolate it;
        not for a write that cannot isolate rows (`isolating` False), for which
        the known-good row would be written for nothing.
        Raises Abandoned once the stop's deadline has passed.
        """
        attempt = unknown = 0
        isolate = False
        while True:
            try:
                result = write(isolate)
            except StorageError as exc:
                # RejectedDataError reaching here (dead letters refused) has no
                # row left to isolate: it needs an operator, like a halt.
                kind = _kind(exc)
                self._metrics.storage_errors.labels(**{"class": kind}).inc()
                self._metrics.halted.set(1 if kind == "halt" else 0)
                unknown = unknown + 1 if kind == "unknown" else 0
                if isolate:
                    # The isolation found no poison row (too many rows fail alone):
                    # back to plain retries, and another isolation round later.
                    isolate, unknown = False, 0
                elif isolating and unknown >= POISON_AFTER and self._takes_writes():
                    log.error("%d unrecognised errors in a row while ClickHouse takes other rows: isolating", unknown)
                    isolate = True
                delay = (
                    self._settings.retry_max_s if kind == "halt" else self._backoff.delay_s(attempt, random.random())
                )
                log.warning(
                    "write failed (%s, attempt %d), nothing acked, retrying in %.1fs: %s: %s",
                    kind,
                    attempt + 1,
                    delay,
                    self._store,
                    exc,
                )
                attempt += 1
                self._sleep(delay)
                continue
            if attempt:
                log.info("write succeeded after %d failed attempts", attempt)
            self._metrics.halted.set(0)
            return result

    def _sleep(self, delay: float) -> None:
        deadline = self._deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Abandoned
            delay = min(delay, remaining)
        self._wake.wait(delay)
        self._wake.clear()
