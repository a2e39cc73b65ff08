"""What only Mosquitto's log records, as Prometheus counters: packets it refused or dropped for size, and,
under `eventpipe up`, clients that took one of its own sessions.

Mosquitto 2.0 counts neither in $SYS (its publish/messages/dropped counts queue
overflows only), and before 2.0.15 it closes a session's connection taken over
without saying why (DISCONNECT 0x8E), so the worker cannot count that itself.
`eventpipe up` reads its broker's log file, and compose's exporter (`eventpipe
broker-metrics`) the log file the broker writes to a volume they share, the
lines written since each started, at each scrape. Both keep the file short
(Aside): Mosquitto never rotates it. Only `up` knows its own clients' ids.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Anchored to Mosquitto's own wording (2.0.11 to 2.0.22, and 2.1.2's), timestamp first, so
# that a client id quoted in another line cannot pass for one of these.
LINES = {
    # A client sent a packet over max_packet_size and was disconnected: nothing of it was acknowledged.
    # Mosquitto 2.1 names the client's address and words it "disconnected: oversize packet.".
    "refused": re.compile(rb"^\d+: Client .* disconnected(?: due to|:) oversize packet\.$"),
    # An accepted message was over a subscriber's Maximum Packet Size: acknowledged, and not sent to it.
    "dropped": re.compile(rb"^\d+: Dropping too large outgoing PUBLISH for .* \(\d+ bytes\)$"),
}
OVERSIZE = "eventpipe_broker_oversize_packets"
HELP = (
    "Packets Mosquitto refused for their size (the client was disconnected, nothing acknowledged; counted per "
    "attempt, so a producer that resends counts each time), or dropped for a subscriber whose Maximum Packet "
    "Size they exceed (acknowledged, never delivered to it). From the broker's log file, read by `eventpipe up` "
    "or compose's exporter."
)
# A connection under a client id, with the user it signed in as (none: anonymous). The id is matched whole
# against `up`'s own, and a hostile id cannot end the line as the broker does (CUT_LINE aside). "bridge":
# any MQTT 3.1.1 client that sets the protocol level's bridge bit is logged so, and takes a session as well.
# The address is a TCP listener's, the only kind `up` opens: a websockets listener's X-Forwarded-For or a
# unix socket's path may hold spaces, and such a line would not count.
CONNECTED = re.compile(
    rb"^\d+: New (?:client|bridge) connected from \S+ as (.+?) \(p\d+, c\d+, k\d+(?:, u'(.*)')?\)\.$"
)
# A client's disconnect, as Mosquitto 2.0 logs it (`Client w disconnected.`) and 2.1, which puts the
# client's address between (`Client w [127.0.0.1:5] disconnected.`): `up`'s stop waited out its timeout.
GOODBYE = rb"Client %s(?: \[[^\]\n]*\])? disconnected"
TAKEOVERS = "eventpipe_broker_session_takeovers"
TAKEOVERS_HELP = (
    "Connections under the session id of `eventpipe up`'s worker or probe by a client not signed in as the "
    "worker: each took that session and what it held (the ACL lets no one else read events, so that is lost). "
    "From the broker's log: Mosquitto before 2.0.15 tells the worker nothing."
)
CHUNK = 1 << 20
# Mosquitto's lines are short; a longer run without a newline is not one of them.
LONGEST_LINE = 64 * 1024
# Mosquitto writes a line into a buffer of 1,000 bytes and cuts what does not fit (logging.c): a line this
# long may be cut, and a client id of about 950 bytes can then end it with any text it likes (a producer
# had 3 clean connections counted as refusals so). Such lines count as nothing.
CUT_LINE = 999
# The broker appends to its log across restarts and never rotates it (a line every 10 s when idle, three
# per connection: 1.9 GB a day for a producer that connects for each of 50 events/s): past this, the log
# is copied aside as <log>.1, replacing the one before, and emptied (Aside).
LOG_KEEP_BYTES = 64 << 20

log = logging.getLogger(__name__)


def _whole(lines: Iterable[bytes]) -> Iterator[bytes]:
    """`lines` (without their newline) that Mosquitto wrote whole, without a trailing CR."""
    for line in lines:
        line = line.rstrip(b"\r")
        if len(line) < CUT_LINE:
            yield line


def count(lines: Iterable[bytes]) -> dict[str, int]:
    """How many of `lines` (without their newline) are each kind."""
    found = dict.fromkeys(LINES, 0)
    for line in _whole(lines):
        for action, pattern in LINES.items():
            if pattern.match(line):
                found[action] += 1
    return found


def goodbye(client_id: str) -> re.Pattern[bytes]:
    """What the broker logs when `client_id` disconnects, in any log text."""
    return re.compile(GOODBYE % re.escape(client_id.encode()))


def taken(lines: Iterable[bytes], own_ids: frozenset[bytes], own_user: bytes) -> int:
    """How many of `lines` connect a client under one of `own_ids` not signed in as `own_user`."""
    found = 0
    for line in _whole(lines):
        if (connected := CONNECTED.match(line)) is not None:
            found += connected.group(1) in own_ids and connected.group(2) != own_user
    return found


class Journal(Collector):
    """Counts the lines of `path` from byte `start` on, reading what is new at each collect; takeovers of
    `own_ids` (client ids) by anyone not signed in as `own_user` too, when there are such ids."""

    def __init__(self, path: Path, start: int = 0, own_ids: Iterable[str] = (), own_user: str = "") -> None:
        self._path = path
        self._offset = start
        self._partial = b""
        self._counts = dict.fromkeys(LINES, 0)
        self._own_ids = frozenset(client_id.encode() for client_id in own_ids)
        self._own_user = own_user.encode()
        self._takeovers = 0
        self._lock = threading.Lock()

    def catch_up(self) -> None:
        """Count what is new now: before a long log is emptied (Aside)."""
        with self._lock:
            self._read()

    def collect(self) -> Iterator[Metric]:
        self.catch_up()
        with self._lock:
            family = CounterMetricFamily(OVERSIZE, HELP, labels=["action"])
            for action, total in self._counts.items():
                family.add_metric([action], total)
            takeovers = CounterMetricFamily(TAKEOVERS, TAKEOVERS_HELP, value=self._takeovers)
        yield family
        if self._own_ids:
            yield takeovers

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
                    if self._own_ids:
                        self._takeovers += taken(lines, self._own_ids, self._own_user)
        except OSError:
            return  # no log yet, or unreadable: the counts stay as they were


class Aside:
    """Keeps a log Mosquitto appends to under `keep_bytes`, while the broker runs.

    Past that size the log is copied aside as <log>.1 (replacing the one before) and emptied: Mosquitto
    appends (O_APPEND), so it goes on at the new end. Not renamed: only a SIGHUP would have it open a new
    file, and that reload resets every listener's max_qos, max_topic_alias and max_connections
    (docs/operations.md). A line written between the copy's last read and the emptying, microseconds, is
    lost. A failure is logged once."""

    def __init__(self, path: Path, keep_bytes: int | None = None) -> None:
        self._path = path
        self._keep_bytes = keep_bytes
        self._failed = False

    @property
    def path(self) -> Path:
        """Where the copy goes."""
        return self._path.with_name(self._path.name + ".1")

    def __call__(self, before: Callable[[], None] = lambda: None) -> bool:
        """Set the log aside if it is past its size, `before` first (the oversize counter reads what is
        new); whether it did."""
        if not self._long():
            return False
        before()
        copy = self.path.with_name(self.path.name + ".new")
        try:
            with self._path.open("rb") as source, copy.open("wb") as target:
                shutil.copyfileobj(source, target)
                os.truncate(self._path, 0)  # right after the last read
            copy.replace(self.path)
        except OSError as exc:
            self._cannot(exc)
            return False
        return True

    def before_start(self) -> None:
        """At a start, before the broker runs and appends to it, a long log is renamed aside (the broker can
        still append to it if that fails; a full disk is said by its own checks)."""
        if self._long():
            try:
                self._path.replace(self.path)
            except OSError as exc:
                self._cannot(exc)

    def _long(self) -> bool:
        try:
            size = self._path.stat().st_size
        except OSError:
            return False
        return size > (LOG_KEEP_BYTES if self._keep_bytes is None else self._keep_bytes)

    def _cannot(self, exc: OSError) -> None:
        if not self._failed:
            log.warning("cannot set aside the broker's log %s: %s", self._path, exc.strerror)
        self._failed = True
