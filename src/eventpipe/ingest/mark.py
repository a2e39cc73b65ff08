"""Worker marks: what a worker has committed, stored for GET /feed's complete_until.

A worker commits its batches one after another, each the oldest messages it
holds, in the order it received them. So when it stores a mark saying
"complete before T", with T the receive time of the first message of the
batch that carries the mark, every message it received before T is in an
earlier batch: committed before the mark was even written. A worker stores
one when it starts (before it subscribes: it has received nothing yet), with a
batch at most once a second, alone every two seconds while it holds nothing
(then T is the moment it found nothing held and no burst being handed over:
receive times are taken under the worker's lock), and one saying it retired
when it stops with nothing left uncommitted. Marks are probe events, so no list or count shows
them; a view copies them into worker_marks (migration 9).
"""

from __future__ import annotations

import json
import time
import uuid

from eventpipe.events import PROBE_EVENT_TYPE, Event
from eventpipe.store.schema.arrival import MARK_COMPLETE_BEFORE, MARK_RETIRED, MARK_WORKER

# At most one mark a second: enough for complete_until, and a batch's insert is not made larger for it.
EVERY_MS = 1000
# An idle worker stores a mark alone this often: an insert of one row, so not every second.
IDLE_MS = 2000


class Marker:
    """The marks of one worker, named by its MQTT client id (stable across its restarts)."""

    def __init__(self, worker: str, topic: str) -> None:
        self._worker, self._topic = worker, topic
        self._last_ms = 0

    def start(self) -> Event:
        """Stored before the worker subscribes: it has received nothing before now."""
        now_ms = _now_ms()
        return self._mark({MARK_WORKER: self._worker, MARK_COMPLETE_BEFORE: now_ms}, now_ms)

    def idle(self) -> bool:
        """True when an idle worker should store a mark alone."""
        return _now_ms() - self._last_ms >= IDLE_MS

    def idle_wait_s(self) -> float:
        """How long an idle worker may wait for a message before its next mark is due."""
        return max(0.0, (self._last_ms + IDLE_MS - _now_ms()) / 1000) + 0.001

    def due(self, first_received_ms: int) -> list[Event]:
        """The mark to store with a batch whose first message was received at `first_received_ms`, if one is due."""
        now_ms = _now_ms()
        if now_ms - self._last_ms < EVERY_MS:
            return []
        self._last_ms = now_ms
        return [self._mark({MARK_WORKER: self._worker, MARK_COMPLETE_BEFORE: first_received_ms}, now_ms)]

    def retired(self) -> Event:
        return self._mark({MARK_WORKER: self._worker, MARK_RETIRED: True}, _now_ms())

    def _mark(self, body: dict[str, object], now_ms: int) -> Event:
        # Dated a millisecond before its receipt: a timestamp equal to the receive
        # time is how the writer knows an event without one, which it looks up.
        return Event(str(uuid.uuid4()), PROBE_EVENT_TYPE, now_ms - 1, now_ms, None, self._topic, json.dumps(body))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
