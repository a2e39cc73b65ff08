"""The read benchmark's live stream: `eventpipe publish` in a process of its own, as a producer is.

Not a thread of the bench: that would share the GIL with the HTTP client the
API side is timed through, and not with the direct side's calls, which run in
another process.
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
        # Unbounded in practice (years at this rate): stop() ends it.
        args = ["publish", "--mqtt-url", self._url, "--count", str(10**11), "--rate", str(STREAM_RATE)]
        with self._log.open("w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "eventpipe.cli.main", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
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
        """Safe before start() and twice."""
        if self._process is not None and self._process.poll() is None:
            # As `timeout` stops it: it stops publishing and reports. Not SIGINT, which a shell starting the
            # bench in the background has its children ignore.
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
