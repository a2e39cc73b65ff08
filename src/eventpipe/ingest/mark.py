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
from collections.abc import Callable

from eventpipe.ingest.clock import Clock
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
    """The marks of one worker, named by its MQTT client id (stable across its restarts). Their times come from
    the worker's `clock` (ingest.clock), and each is written after the one before, whatever the wall clock did;
    when one is due is timed with time.monotonic."""

    def __init__(
        self, worker: str, session: str = "", clock: Clock | None = None, tick: Callable[[], float] = time.monotonic
    ) -> None:
        self._worker = worker
        self.session = session  # its session marks' name (session_mark_name); "" for a marker that stores none
        self._clock = clock or Clock()
        self._tick = tick
        self._written_ms = 0
        self._last_s = -float("inf")
        self._session_s = -float("inf")

    def resume(self, written_ms: int, complete_before_ms: int) -> None:
        """After the worker's newest stored mark: every mark and reading from now on comes after it."""
        self._written_ms = max(self._written_ms, written_ms)
        self._clock.raise_to(max(written_ms, complete_before_ms))

    def again(self, mark: Mark) -> Mark:
        """`mark` written anew, after every mark before it: a start mark stored late, once resumed."""
        return mark._replace(written=self._written(self._clock.now_ms()))

    def start(self) -> Mark:
        """Stored before the worker subscribes: it has received nothing before now."""
        now_ms = self._clock.now_ms()
        return Mark(self._worker, complete_before=now_ms, retired=False, written=self._written(now_ms))

    def idle(self) -> bool:
        """True when an idle worker should store a mark alone."""
        return self._tick() - self._last_s >= IDLE_MS / 1000

    def idle_wait_s(self) -> float:
        """How long an idle worker may wait for a message before its next mark is due."""
        return max(0.0, self._last_s + IDLE_MS / 1000 - self._tick()) + 0.001

    def due(self, first_received_ms: int, expiry_s: int | None = None) -> list[Mark]:
        """The mark to store after committing a batch whose first message was received at `first_received_ms`,
        if one is due; and, linked to the broker now with a session lasting `expiry_s`, the session's when due."""
        now_s = self._tick()
        if now_s - self._last_s < EVERY_MS / 1000:
            return []
        self._last_s = now_s
        written = self._written(self._clock.now_ms())
        marks = [Mark(self._worker, complete_before=first_received_ms, retired=False, written=written)]
        if self.session and expiry_s is not None and now_s - self._session_s >= SESSION_EVERY_MS / 1000:
            self._session_s = now_s
            marks.append(Mark(self.session, complete_before=expiry_s, retired=True, written=written))
        return marks

    def retired(self) -> Mark:
        return Mark(self._worker, complete_before=0, retired=True, written=self._written(self._clock.now_ms()))

    def _written(self, now_ms: int) -> int:
        # Strictly after the mark before: two in one millisecond would tie, and the older might win.
        self._written_ms = max(now_ms, self._written_ms + 1)
        return self._written_ms
