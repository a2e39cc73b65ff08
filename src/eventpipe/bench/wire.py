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
import struct
import threading
import time

from eventpipe.broker.address import MqttAddress
from eventpipe.errors import BrokerError

CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0
# Unacknowledged publishes at once; far below Mosquitto's in-flight limit and
# the 65,535 packet ids, so an id is always free again before it is reused.
WINDOW = 1_000


def varint(value: int) -> bytes:
    """An MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    body = _string(topic) + struct.pack("!H", packet_id) + b"\x00" + payload  # \x00: no properties
    return bytes((PUBLISH_QOS1,)) + varint(len(body)) + body


class Publisher:
    """One connection; `send` blocks while WINDOW publishes await their PUBACK."""

    def __init__(self, url: str, client_id: str, timeout: float = 30.0) -> None:
        address = MqttAddress.parse(url)
        self._timeout = timeout
        self._sock = socket.create_connection((address.host, address.port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Clean start (0x02), user and password flags when given, keepalive 0 (no pings), no properties.
        flags = 0x02 | (0xC0 if address.username else 0)
        variable = _string("MQTT") + bytes((5, flags)) + struct.pack("!H", 0) + b"\x00"
        payload = _string(client_id)
        if address.username:
            payload += _string(address.username) + _string(address.password or "")
        body = variable + payload
        self._sock.sendall(bytes((CONNECT,)) + varint(len(body)) + body)
        header = self._read_exact(2)
        rest = self._read_exact(header[1]) if header[1] < 128 else b""
        if header[0] != CONNACK or len(rest) < 2 or rest[1] != 0:
            raise BrokerError(f"the broker at {address} refused the benchmark publisher: {header + rest!r}")
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

    def _read_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = self._sock.recv(size - len(data))
            if not piece:
                raise BrokerError("the broker closed the benchmark publisher's connection")
            data += piece
        return data

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
            while True:
                if len(buffer) - position < 2:
                    break
                kind = buffer[position]
                length, shift, cursor = 0, 0, position + 1
                while cursor < len(buffer):
                    byte = buffer[cursor]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    cursor += 1
                    if not byte & 0x80:
                        break
                else:
                    break
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
