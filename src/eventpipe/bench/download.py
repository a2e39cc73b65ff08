"""Scenario 3's export figure: one `/export` of the last 24 h through HTTP, its rate and what it cost the server.

Timed once per size, not repeated like the reads: an export lasts as long as
its window is large (about 1.1M events a day at 100M stored over 90 days). The
body is read in chunks as a client would and counted by lines (NDJSON: one
event a line), never held. The server's growth is the peak resident memory of
the `eventpipe up` process during the export over its memory just before;
that process also runs the worker under the live stream, so the figure is an
upper bound of what the export adds.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from time import perf_counter

from eventpipe.errors import EventpipeError
from eventpipe.process import rss_bytes

CHUNK = 1 << 20
SAMPLE_S = 0.02


@dataclass(frozen=True)
class Download:
    size: int  # events stored
    path: str
    events: int
    seconds: float
    growth_bytes: int

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds else 0.0


class Peak(threading.Thread):
    """The highest resident memory of process `pid` until stopped, sampled every SAMPLE_S."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="bench-peak", daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.peak = rss_bytes(pid)

    def run(self) -> None:
        while not self._done.wait(SAMPLE_S):
            try:
                self.peak = max(self.peak, rss_bytes(self._pid))
            except (OSError, RuntimeError):  # the process is gone: the export fails and says so
                return

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def download(size: int, port: int, key: str, pid: int, path: str) -> Download:
    """GET `path` (an NDJSON export) from the API on `port`; count its lines and time it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    before = rss_bytes(pid)
    peak = Peak(pid)
    peak.start()
    started = perf_counter()
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        if response.status != 200:
            raise EventpipeError(f"GET {path} answered {response.status}: {response.read(200)!r}")
        lines = 0
        while chunk := response.read(CHUNK):
            lines += chunk.count(b"\n")
    except (OSError, http.client.HTTPException) as exc:
        raise EventpipeError(f"GET {path} on port {port} failed: {exc}") from exc
    finally:
        seconds = perf_counter() - started
        highest = peak.stop()
        connection.close()
    return Download(size, path, lines, seconds, max(0, highest - before))
