"""A steady trickle of demo events written straight through the Writer, in the read benchmark's direct process.

The API side is timed while a stream arrives over MQTT; the direct side gets
the same rate through the worker's own insert, in batches as often as the
worker flushes, so both read past fresh small parts and share the CPU with an
ingest: what is left between them is the API's own cost.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from eventpipe.bench.backlog import demo_messages
from eventpipe.events import Event, Limits, parse
from eventpipe.store.writer import Writer

FLUSH_S = 0.2  # the worker's default EVENTPIPE_BATCH_MAX_MS


class Trickle:
    def __init__(self, client: Client, rate: float) -> None:
        self._writer = Writer(client)
        self._per_flush = max(1, round(rate * FLUSH_S))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self.written = 0

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        limits = Limits()
        while not self._stop.wait(FLUSH_S):
            now_ms = time.time_ns() // 1_000_000
            messages = demo_messages(self._per_flush, seed=self.written, start=datetime.now(UTC))
            batch = [parse(topic, payload, now_ms, limits) for topic, payload in messages]
            self._writer.insert_events([event for event in batch if isinstance(event, Event)])
            self.written += len(batch)
