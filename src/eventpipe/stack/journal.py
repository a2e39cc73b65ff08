"""What only Mosquitto's log records, as a Prometheus counter: packets it refused or dropped for size.

Mosquitto 2.0 counts neither in $SYS (its publish/messages/dropped counts queue
overflows only). `eventpipe up` owns its broker's log file and reads the lines
written since it started, at each scrape. Compose's broker publishes its log
lines on $SYS/broker/log/ as well, where its exporter counts them with the same
patterns (stack.statistics).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Anchored to Mosquitto's own wording (2.0.11 to 2.0.22), timestamp first, so
# that a client id quoted in another line cannot pass for one of these.
LINES = {
    # A client sent a packet over max_packet_size and was disconnected: nothing of it was acknowledged.
    "refused": re.compile(rb"^\d+: Client .* disconnected due to oversize packet\.$"),
    # An accepted message was over a subscriber's Maximum Packet Size: acknowledged, and not sent to it.
    "dropped": re.compile(rb"^\d+: Dropping too large outgoing PUBLISH for .* \(\d+ bytes\)$"),
}
OVERSIZE = "eventpipe_broker_oversize_packets"
HELP = (
    "Packets Mosquitto refused for their size (the client was disconnected, nothing acknowledged; counted per "
    "attempt, so a producer that resends counts each time), or dropped for a subscriber whose Maximum Packet "
    "Size they exceed (acknowledged, never delivered to it). From the broker's log (its file under "
    "`eventpipe up`, its log topics in compose)."
)
CHUNK = 1 << 20
# Mosquitto's lines are short; a longer run without a newline is not one of them.
LONGEST_LINE = 64 * 1024


def count(lines: Iterable[bytes]) -> dict[str, int]:
    """How many of `lines` (without their newline) are each kind."""
    found = dict.fromkeys(LINES, 0)
    for line in lines:
        for action, pattern in LINES.items():
            if pattern.match(line.rstrip(b"\r")):
                found[action] += 1
    return found


class Journal(Collector):
    """Counts the lines of `path` from byte `start` on, reading what is new at each collect."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self._path = path
        self._offset = start
        self._partial = b""
        self._counts = dict.fromkeys(LINES, 0)
        self._lock = threading.Lock()

    def catch_up(self) -> None:
        """Count what is new now: before `up` empties a long log (stack.mosquitto.set_aside_log)."""
        with self._lock:
            self._read()

    def collect(self) -> Iterator[Metric]:
        self.catch_up()
        with self._lock:
            family = CounterMetricFamily(OVERSIZE, HELP, labels=["action"])
            for action, total in self._counts.items():
                family.add_metric([action], total)
        yield family

    def _read(self) -> None:
        try:
            with self._path.open("rb") as handle:
                handle.seek(0, 2)
                if handle.tell() < self._offset:
                    # Truncated or replaced: what is there now was written since.
                    self._offset, self._partial = 0, b""
                handle.seek(self._offset)
                while chunk := handle.read(CHUNK):
                    self._offset += len(chunk)
                    lines = (self._partial + chunk).split(b"\n")
                    self._partial = lines.pop()
                    if len(self._partial) > LONGEST_LINE:
                        self._partial = b""
                    for action, total in count(lines).items():
                        self._counts[action] += total
        except OSError:
            return  # no log yet, or unreadable: the counts stay as they were
