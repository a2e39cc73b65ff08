"""Worker marks: what a worker has committed, stored for GET /feed's complete_until.

A worker commits its batches one after another, each the oldest messages it
holds, in the order it received them. So when it stores a mark saying
"complete before T" after committing a batch, with T the receive time of that
batch's first message, every message it received before T is in an earlier
batch: committed before the mark was even written. A worker stores one when
it starts (before it subscribes: it has received nothing yet), after a batch
at most once a second, alone every two seconds while it holds nothing (then T
is the moment it found nothing held and no burst being handed over: receive
times are taken under the worker's lock), and one saying it retired when it
stops with nothing left uncommitted. The worker writes them into worker_marks
itself (migration 14), never into `events`.

While connected, a worker also stores, at most a minute apart, a mark saying it
holds its broker session, under a name of its own (`session_mark_name`), retired
so that the feed and erasures pass it by, with the session's expiry in seconds
as its `complete_before`. A start that finds no session younger than that counts
it lost (ingest.handshake).
"""

from __future__ import annotations

import hashlib
import time

from eventpipe.store.writer import Mark

# At most one mark a second: enough for complete_until, and an insert of its own costs little that often.
EVERY_MS = 1000
# An idle worker stores a mark alone this often: an insert of one row, so not every second.
IDLE_MS = 2000
# A connected worker's session marks, at most this often.
SESSION_EVERY_MS = 60_000


def session_mark_name(worker: str, session_id: str, broker: str) -> str:
    """The name of a worker's session marks: its name and a digest of its session id and broker, so that a
    changed secret or broker (another session: the old one keeps its queue) starts afresh. Never the id
    itself, which any reader of the store could then take the session over with."""
    digest = hashlib.sha256(f"{session_id}\n{broker}".encode()).hexdigest()[:16]
    return f"{worker}#session-{digest}"


class Marker:
    """The marks of one worker, named by its MQTT client id (stable across its restarts)."""

    def __init__(self, worker: str, session: str = "") -> None:
        self._worker = worker
        self.session = session  # its session marks' name (session_mark_name); "" for a marker that stores none
        self._last_ms = 0
        self._session_ms = 0

    def start(self) -> Mark:
        """Stored before the worker subscribes: it has received nothing before now."""
        now_ms = _now_ms()
        return Mark(self._worker, complete_before=now_ms, retired=False, written=now_ms)

    def idle(self) -> bool:
        """True when an idle worker should store a mark alone."""
        return _now_ms() - self._last_ms >= IDLE_MS

    def idle_wait_s(self) -> float:
        """How long an idle worker may wait for a message before its next mark is due."""
        return max(0.0, (self._last_ms + IDLE_MS - _now_ms()) / 1000) + 0.001

    def due(self, first_received_ms: int, expiry_s: int | None = None) -> list[Mark]:
        """The mark to store after committing a batch whose first message was received at `first_received_ms`,
        if one is due; and, linked to the broker now with a session lasting `expiry_s`, the session's when due."""
        now_ms = _now_ms()
        if now_ms - self._last_ms < EVERY_MS:
            return []
        self._last_ms = now_ms
        marks = [Mark(self._worker, complete_before=first_received_ms, retired=False, written=now_ms)]
        if self.session and expiry_s is not None and now_ms - self._session_ms >= SESSION_EVERY_MS:
            self._session_ms = now_ms
            marks.append(Mark(self.session, complete_before=expiry_s, retired=True, written=now_ms))
        return marks

    def retired(self) -> Mark:
        return Mark(self._worker, complete_before=0, retired=True, written=_now_ms())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
