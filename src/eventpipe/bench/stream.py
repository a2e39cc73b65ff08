"""The read benchmark's live stream: `eventpipe publish` in a process of its own, as a producer is.

Published from the bench's own threads, the stream shared the GIL with the
HTTP client the API side is timed through, and not with the direct side's
calls, which run in another process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from eventpipe.bench.child import environment
from eventpipe.errors import EventpipeError
from eventpipe.stack.child import parent_death_signal

# A steady production-like stream on top of the stored events while reads are timed.
STREAM_RATE = 500.0


class Stream:
    """Demo events at STREAM_RATE into the broker at `url`, fresh ids each, from start() to stop()."""

    def __init__(self, url: str, log: Path) -> None:
        self._url = url
        self._process: subprocess.Popen[bytes] | None = None
        self._log = log

    def start(self) -> None:
        # More than any measurement lasts; stop() ends it.
        count = str(int(STREAM_RATE * 3600))
        self._handle = self._log.open("ab")
        args = ["publish", "--mqtt-url", self._url, "--count", count, "--rate", str(STREAM_RATE)]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "eventpipe.cli.main", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env=environment(),
            preexec_fn=parent_death_signal(),  # gone with the bench, even killed
        )

    def check(self) -> None:
        """Raise EventpipeError if the publisher stopped by itself: the reads were timed without a stream."""
        if self._process is not None and self._process.poll() is not None:
            said = self._log.read_text(errors="replace").strip()[-500:]
            raise EventpipeError(f"the live stream stopped (exit {self._process.returncode}): {said}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # as Ctrl-C: it stops publishing and reports
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None:
            self._handle.close()
