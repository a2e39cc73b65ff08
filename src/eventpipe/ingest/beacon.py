"""The worker's marks, stored: its start, its progress and its retirement (ingest.mark says what each means).

A mark that cannot be stored never stops the batches: a start mark is retried before the first batch, a
progress mark is replaced by the next, and a retirement missed only holds complete_until back.
"""

from __future__ import annotations

import logging

from eventpipe.errors import StorageError
from eventpipe.ingest.clock import Clock, Skew
from eventpipe.ingest.mark import Marker
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.store.writer import Mark, Writer

log = logging.getLogger(__name__)


class Beacon:
    """Stores the marks of the worker `name`, whose broker session's marks are named `session`
    (ingest.mark.session_mark_name), on `clock`; keeps the skew gauge of that clock against ClickHouse's."""

    def __init__(self, name: str, session: str, writer: Writer, clock: Clock, metrics: IngestMetrics) -> None:
        self._name = name
        self._writer = writer
        self.marker = Marker(name, session, clock)
        self._skew = Skew(clock, writer.server_time_ms, metrics.clock_skew)
        self._start_mark: list[Mark] = []
        self._resumed = False

    def start(self) -> tuple[int, int] | None:
        """Before subscribing, so the feed knows this worker before it receives: go on from the last mark
        stored, store a start mark (or keep it for `store_start`), and say when this worker last held its
        broker session (ingest.handshake), None when unknown. A worker must start while ClickHouse refuses
        it too: then its flusher stores the mark before any batch."""
        try:
            self._resume()
        except StorageError as exc:
            log.warning("could not read this worker's last mark; read again before its start mark: %s", exc)
        self._start_mark = [self.marker.start()]
        last_held: tuple[int, int] | None = None
        try:
            last_held = self._writer.last_mark(self.marker.session)
        except StorageError as exc:
            log.warning("could not read when this worker last held its session; one lost goes uncounted: %s", exc)
        try:
            self.store_start()
        except StorageError as exc:
            log.warning("could not store this worker's start mark; retried before its first batch: %s", exc)
        return last_held

    @property
    def start_pending(self) -> bool:
        """Whether the start mark is still to be stored (`store_start`, retried until it is)."""
        return bool(self._start_mark)

    def store_start(self) -> None:
        if not self._resumed:  # ClickHouse refused at the start: the last mark is read first, then written after
            self._resume()
            self._start_mark = [self.marker.again(mark) for mark in self._start_mark]
        self._writer.insert_marks(self._start_mark)
        self._start_mark = []

    def store(self, marks: list[Mark]) -> None:
        """Try the marks once: a mark missed only holds complete_until back until the next one, due
        within two seconds, so a store that refuses marks must not stall the batches."""
        try:
            self._writer.insert_marks(marks)
        except StorageError as exc:
            log.warning("could not store this worker's mark; the next one replaces it: %s", exc)
        self._skew.measure()

    def retire(self) -> None:
        """Only after a clean stop: an insert still hanging could commit after the retirement."""
        try:
            self._writer.insert_marks([self.marker.retired()])
        except StorageError as exc:
            log.warning("could not store this worker's retirement; the feed's complete_until waits for it: %s", exc)

    def _resume(self) -> None:
        """Its marks go on from its last, whatever the wall clock did while it was away (ingest.clock)."""
        last = self._writer.last_mark(self._name)
        self._resumed = True
        if last is None:
            return
        self.marker.resume(*last)
        # The minute's first reading of the skew, on the clock just raised to that mark.
        ahead_s = self._skew.measure()
        if ahead_s is not None and ahead_s > 5:
            log.error(
                "this worker's clock is %.0f s ahead of ClickHouse's, at its last mark (its clock ran ahead): it "
                "stamps receive times there until real time reaches it; see EventpipeClockSkew in the runbooks",
                ahead_s,
            )
