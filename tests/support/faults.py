"""Fault injection at the store boundary: the real writer over the real engine, with a switch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from eventpipe.config import Settings
from eventpipe.errors import StorageError
from eventpipe.events import Event, Rejection
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.query import Query
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Mark, Writer
from tests.support.pipeline import settings_for
from tests.support.services import ContainerBroker, LocalBroker

# Either broker a test may get (tests/conftest.py), and a factory of them by in-flight window.
Broker = LocalBroker | ContainerBroker
BrokerFactory = Callable[[int], Broker]


class FaultyWriter(Writer):
    """Fails every write with `failure` while it is set; sleeps `delay_s` before each write."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failure: type[StorageError] | None = None
        self.delay_s = 0.0
        self.failed_writes = 0

    def takes_writes(self) -> bool:
        # An outage takes the whole server away, canary rows included.
        return self.failure is None and super().takes_writes()

    def insert_events(self, events: Sequence[Event], *, isolate_unknown: bool = False) -> list[tuple[int, str]]:
        self._gate()
        return super().insert_events(events, isolate_unknown=isolate_unknown)

    def insert_marks(self, marks: Sequence[Mark]) -> None:
        self._gate()
        super().insert_marks(marks)

    def last_mark(self, worker: str) -> tuple[int, int] | None:
        self._gate()  # a read, but the same connection: refused when the writes are
        return super().last_mark(worker)

    def insert_dead_letters(self, rejections: Sequence[Rejection]) -> None:
        self._gate()
        super().insert_dead_letters(rejections)

    def _gate(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        failure = self.failure
        if failure is not None:
            self.failed_writes += 1
            raise failure("injected fault: ClickHouse is unreachable")


class FailingReader(Reader):
    """The real reader, except that every query raises `failure` while it is set."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failure: type[Exception] | None = None

    def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
        if self.failure is not None:
            raise self.failure("injected fault")
        return super().run(query, binary, **options)


def faulty_setup(
    broker_factory: BrokerFactory, dsn: str, window: int, batch_max_rows: int, **overrides: object
) -> tuple[Broker, Settings, FaultyWriter]:
    """A migrated store behind a FaultyWriter, and a broker whose in-flight window matches the worker's;
    `overrides` are more of the worker's settings."""
    migrate(connect(dsn))
    broker = broker_factory(window)
    settings = settings_for(broker.url, dsn, batch_max_rows=batch_max_rows, mqtt_receive_maximum=window, **overrides)
    return broker, settings, FaultyWriter(connect(dsn))
