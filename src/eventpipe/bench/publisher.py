"""A bare MQTT v5 QoS 1 publisher on a plain socket: the benchmark's load generator.

paho spends about 200 microseconds per QoS 1 publish (a wake-up write per
packet, a scan of its in-flight table per PUBACK): as the load side it would
measure itself, not the pipe. This writes packets straight to the socket and
counts PUBACKs on a reader thread. Loopback only, no TLS, no reconnects: a
failure ends the benchmark run.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from eventpipe.errors import BrokerError
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.wire import CONNACK, DISCONNECT, PUBACK, connect_packet, decode_length, publish_packet, read_packet

# Unacknowledged publishes at once; far below Mosquitto's in-flight limit and
# the 65,535 packet ids, so an id is always free again before it is reused.
WINDOW = 1_000


class Publisher:
    """One connection; `send` blocks while WINDOW publishes await their PUBACK."""

    def __init__(self, url: str, client_id: str, timeout: float = 30.0) -> None:
        address = MqttAddress.parse(url)
        self._timeout = timeout
        self._sock = socket.create_connection((address.host, address.port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Keepalive 0: no pings to answer while it publishes.
        self._sock.sendall(connect_packet(client_id, address.username, address.password, keepalive=0))
        try:
            header, body = read_packet(self._sock)
        except ConnectionError:
            raise BrokerError("the broker closed the benchmark publisher's connection") from None
        if header != CONNACK or len(body) < 2 or body[1] != 0:
            raise BrokerError(f"the broker at {address} refused the benchmark publisher: {header:#x} {body!r}")
        self._free = threading.Semaphore(WINDOW)
        self._lock = threading.Lock()
        self._next_id = 0
        self.acked = 0
        self.refused = 0
        self._reader = threading.Thread(target=self._read_acks, name="bench-pubacks", daemon=True)
        self._reader.start()

    def send(self, packets: list[tuple[str, bytes]]) -> None:
        """Publish (topic, payload) pairs in one write, waiting for room in the window first."""
        chunk = bytearray()
        for topic, payload in packets:
            if not self._free.acquire(timeout=self._timeout):
                raise BrokerError("the broker stopped acknowledging the benchmark's publishes")
            self._next_id = self._next_id % 65_535 + 1
            chunk += publish_packet(topic, payload, self._next_id)
        self._sock.sendall(chunk)

    def publish_all(self, packets: list[tuple[str, bytes]], chunk: int = 200) -> None:
        """As fast as the broker takes them."""
        for start in range(0, len(packets), chunk):
            self.send(packets[start : start + chunk])

    def wait_acked(self, count: int) -> bool:
        deadline = time.monotonic() + self._timeout
        while self.acked + self.refused < count:
            if time.monotonic() > deadline or not self._reader.is_alive():
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(bytes((DISCONNECT, 0)))
        self._sock.close()
        self._reader.join(2)

    def _read_acks(self) -> None:
        buffer = b""
        self._sock.settimeout(None)
        while True:
            try:
                data = self._sock.recv(65_536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            position = 0
            while len(buffer) - position >= 2:
                kind = buffer[position]
                remaining = decode_length(buffer, position + 1, len(buffer))
                if remaining is None:
                    break
                length, cursor = remaining
                if len(buffer) - cursor < length:
                    break
                if kind & 0xF0 == PUBACK:
                    # v5: a reason code follows the id when it is not success.
                    if length > 2 and buffer[cursor + 2] >= 0x80:
                        self.refused += 1
                    else:
                        self.acked += 1
                    self._free.release()
                position = cursor + length
            buffer = buffer[position:]
