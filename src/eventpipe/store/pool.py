"""Clients of one store, one per read running at once.

clickhouse-connect runs one query at a time on a client of the embedded engine (it locks the client's
chDB handle), so the API's one client made every read wait for every other: any key's request queued
behind another key's live counts (0.5 s for a 35 ms page, behind one key's 8 requests in an attack),
and ClickHouse's query priorities could not act on reads that never reached it. Each read takes a
client of its own here; the API's seats (api.flight) bound how many run at once, so the pool grows to
at most that many. A server's HTTP client runs concurrent queries itself and needs no pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from clickhouse_connect.driver.client import Client


class Pool:
    """`first`, and more made by `make` while every client made so far is busy."""

    def __init__(self, first: Client, make: Callable[[], Client] | None = None) -> None:
        self.first = first
        self._make = make
        self._idle = [first]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def client(self) -> Iterator[Client]:
        if self._make is None:
            yield self.first  # thread-safe itself: shared
            return
        with self._lock:
            taken = self._idle.pop() if self._idle else None
        if taken is None:
            taken = self._make()
        try:
            yield taken
        finally:
            with self._lock:
                self._idle.append(taken)
