"""The dead-letter gauge: counted at most once per max age, off the scrape's thread, and never a made-up 0
while ClickHouse is away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from eventpipe.api.backlog import Backlog
from eventpipe.errors import RetryableStorageError


class Store:
    """Answers the counts it is given, or raises while `down`; holds each count until `gate` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.counts = {"pending": 7, "failed": 2}
        self.gate = threading.Event()
        self.gate.set()

    def count(self) -> dict[str, int]:
        self.calls += 1
        self.gate.wait()
        if self.down:
            raise RetryableStorageError("down")
        return dict(self.counts)


def gauge(backlog: Backlog) -> Callable[[str], float | None]:
    """A scrape of one status, once the count it may have begun has ended."""
    registry = CollectorRegistry()
    registry.register(backlog)

    def value(status: str) -> float | None:
        registry.get_sample_value("eventpipe_dead_letters_by_status", {"status": status})
        backlog.wait(10)
        return registry.get_sample_value("eventpipe_dead_letters_by_status", {"status": status})

    return value


def test_counts_are_taken_at_most_once_per_max_age() -> None:
    store = Store()
    value = gauge(Backlog(store.count, max_age_s=3600))
    assert store.calls == 0  # registering asks ClickHouse nothing
    assert (value("pending"), value("failed"), value("replayed")) == (7, 2, 0)
    store.counts = {"pending": 9}
    assert value("pending") == 7 and store.calls == 1


def test_an_outage_keeps_the_last_counts_and_shows_none_before_any() -> None:
    store = Store()
    backlog = Backlog(store.count, max_age_s=0)
    value = gauge(backlog)
    assert value("pending") == 7
    store.down = True
    assert value("pending") == 7  # asked again (max age 0), kept the last answer
    assert store.calls >= 2
    never = Store()
    never.down = True
    assert gauge(Backlog(never.count))("pending") is None


def test_a_failed_count_waits_its_max_age_before_the_next() -> None:
    # A ClickHouse that fails every count was asked again at every scrape (every 5 s under `eventpipe up`).
    store = Store()
    store.down = True
    value = gauge(Backlog(store.count, max_age_s=3600))
    assert value("pending") is None and value("pending") is None
    assert store.calls == 1


def test_a_slow_count_never_holds_a_scrape() -> None:
    # The metrics listener answers every scrape from one thread, the worker's too under `eventpipe up`: a count
    # waiting on ClickHouse held them all past Prometheus' timeout, and a healthy worker looked down.
    store = Store()
    store.gate.clear()
    backlog = Backlog(store.count, max_age_s=0)
    registry = CollectorRegistry()
    registry.register(backlog)
    started = time.monotonic()
    for _ in range(3):
        assert registry.get_sample_value("eventpipe_dead_letters_by_status", {"status": "pending"}) is None
    assert time.monotonic() - started < 1.0
    assert store.calls == 1, "one count at a time, however many scrapes come meanwhile"
    store.gate.set()
    backlog.wait(10)
    assert registry.get_sample_value("eventpipe_dead_letters_by_status", {"status": "pending"}) == 7
