"""The dead-letter gauge: counted at most once per max age, and never a made-up 0 while ClickHouse is away."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from eventpipe.api.backlog import Backlog
from eventpipe.errors import RetryableStorageError


class Store:
    """Answers the counts it is given, or raises while `down`."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.counts = {"pending": 7, "failed": 2}

    def count(self) -> dict[str, int]:
        self.calls += 1
        if self.down:
            raise RetryableStorageError("down")
        return dict(self.counts)


def gauge(backlog: Backlog) -> Callable[[str], float | None]:
    registry = CollectorRegistry()
    registry.register(backlog)
    return lambda status: registry.get_sample_value("eventpipe_dead_letters_by_status", {"status": status})


def test_counts_are_taken_at_most_once_per_max_age() -> None:
    store = Store()
    value = gauge(Backlog(store.count, max_age_s=3600))
    assert store.calls == 0  # registering asks ClickHouse nothing
    assert (value("pending"), value("failed"), value("replayed")) == (7, 2, 0)
    store.counts = {"pending": 9}
    assert value("pending") == 7 and store.calls == 1


def test_an_outage_keeps_the_last_counts_and_shows_none_before_any() -> None:
    store = Store()
    value = gauge(Backlog(store.count, max_age_s=0))
    assert value("pending") == 7
    store.down = True
    assert value("pending") == 7  # asked again (max age 0), kept the last answer
    assert store.calls == 2
    never = Store()
    never.down = True
    assert gauge(Backlog(never.count))("pending") is None
