"""The read benchmark's live stream: `eventpipe publish` in a process of its own, as a producer is.

Not a thread of the bench: that would share the GIL with the HTTP client the
API side is timed through, and not with the direct side's calls, which run in
another process.
"""

from __future__ import annotations

from pathlib import Path

from eventpipe.bench.service import Service
from eventpipe.errors import EventpipeError

# A steady production-like stream on top of the stored events while reads are timed.
STREAM_RATE = 500.0


class Stream:
    """Demo events at STREAM_RATE into the broker at `url`, fresh ids each, from start() to stop()."""

    def __init__(self, url: str, log: Path) -> None:
        self._url = url
        self._log = log
        self._publisher: Service | None = None

    def start(self) -> None:
        # Unbounded in practice (years at this rate): stop() ends it.
        args = ["publish", "--mqtt-url", self._url, "--count", str(10**11), "--rate", str(STREAM_RATE)]
        self._publisher = Service(args, {}, self._log)

    def check(self) -> None:
        """Raise EventpipeError if the publisher stopped by itself: the reads were timed without a stream."""
        if self._publisher is not None and (code := self._publisher.process.poll()) is not None:
            raise EventpipeError(f"the live stream stopped (exit {code}): {self._publisher.tail()}")

    def stop(self) -> None:
        """Safe before start() and twice. SIGTERM, as `timeout` stops it: it stops publishing and reports
        (not SIGINT, which a shell starting the bench in the background has its children ignore)."""
        if self._publisher is not None:
            self._publisher.stop(timeout=10)
