"""Clients of the embedded engine, one per key's read running at once.

clickhouse-connect runs one query at a time on a client of the embedded engine (it locks the client's
chDB handle), so the API's one client made every read wait for every other: any key's request queued
behind another key's live counts (0.5 s for a 35 ms page, behind one key's 8 requests in an attack).
Here each caller (an API key) has a lane: its reads still run one at a time, as every read did before,
while another key's read takes a client of its own and runs beside them. One lane each, not a client
per read: 8 reads of one key side by side took the CPU from the worker's inserts in the same process
(ingest p99 from 0.25 s to 1 s under that attack), where a lane lets each key have one. A server's HTTP
client runs concurrent queries itself: no pool, and no lanes, as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from clickhouse_connect.driver.client import Client


class Pool:
    """`first`, and more made by `make` while every client made so far is busy; with `make`, one read
    at a time per lane."""

    def __init__(self, first: Client, make: Callable[[], Client] | None = None) -> None:
        self._first = first
        self._make = make
        self._idle = [first]
        self.made = 1  # clients made so far: at most one per lane with a read at once, plus `first`
        self._lock = threading.Lock()
        # A lock per lane (an API key's name: a bounded set), made on first use and kept.
        self._lanes: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def client(self, lane: str = "") -> Iterator[Client]:
        """A client for one query of `lane` ("": reads made on no one's behalf, which share a lane)."""
        if self._make is None:
            yield self._first  # thread-safe itself: shared
            return
        with self._lock:
            turn = self._lanes.setdefault(lane, threading.Lock())
        with turn:
            with self._lock:
                taken = self._idle.pop() if self._idle else None
            if taken is None:
                taken = self._make()
                with self._lock:
                    self.made += 1
            try:
                yield taken
            finally:
                with self._lock:
                    self._idle.append(taken)
