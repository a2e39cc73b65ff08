"""What a long-running command has committed, logged now and then while it moves."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry

log = logging.getLogger("eventpipe")


class Progress:
    """Logs what was committed since the last report, at most every `every` seconds, only when it moved."""

    SERIES = ("eventpipe_events_stored_total", "eventpipe_messages_received_total")

    def __init__(self, registry: CollectorRegistry, every: float = 10.0) -> None:
        self._registry = registry
        self._every = every
        self._last_time = time.monotonic()
        self._last = self._read()

    def _read(self) -> tuple[float, float, float]:
        stored, received = (self._registry.get_sample_value(name) or 0.0 for name in self.SERIES)
        dead = sum(
            sample.value
            for metric in self._registry.collect()
            if metric.name == "eventpipe_dead_letters"
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        return stored, dead, received

    def report(self) -> None:
        now = time.monotonic()
        if now - self._last_time < self._every:
            return
        current = self._read()
        if current != self._last:
            stored, dead, received = (c - p for c, p in zip(current, self._last, strict=True))
            log.info(
                "last %.0fs: %d received, %d events stored, %d dead letters (totals: %d stored, %d dead letters)",
                now - self._last_time,
                received,
                stored,
                dead,
                current[0],
                current[1],
            )
        self._last, self._last_time = current, now
