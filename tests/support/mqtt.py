"""Publishing arbitrary payloads, as a misbehaving producer would."""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from eventpipe.bench.wire import varint
from eventpipe.broker.address import MqttAddress
from eventpipe.broker.connection import make_client


def publish_raw(url: str, messages: Iterable[tuple[str, bytes]], qos: int = 1) -> int:
    """Publish (topic, payload) pairs and wait for every PUBACK; return how many were acknowledged."""
    address = MqttAddress.parse(url)
    client = make_client(address, f"test-producer-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
        return sum(1 for info in infos if info.is_published())
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True)
class Answer:
    """What the broker did with a streamed PUBLISH: its PUBACK or DISCONNECT reason code, or None when it
    closed the connection without a word; and how many bytes of the packet went out before it did."""

    packet: str  # "puback", "disconnect" or "closed"
    reason: int | None
    sent: int


def stream_publish(url: str, topic: str, payload_size: int, chunk: int = 64 * 1024) -> Answer:
    """MQTT 5 CONNECT, then one QoS 1 PUBLISH of `payload_size` bytes written as it goes, as a hostile
    producer would: paho builds a whole packet in memory before sending, this holds one chunk at a time,
    so that a test can send hundreds of MiB and measure only what the broker and the worker hold."""
    address = MqttAddress.parse(url)
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(connect_packet(f"test-stream-{uuid.uuid4().hex[:8]}", address.username, address.password))
        header, body = read_packet(sock)
        assert header == 0x20 and body[1] == 0, f"CONNACK refused: {body!r}"
        variable = utf8(topic) + struct.pack("!H", 1) + b"\x00"  # packet id 1, no properties
        head = bytes([0x32]) + varint(len(variable) + payload_size) + variable
        sent = 0
        try:
            sock.sendall(head)
            sent = len(head)
            block = b"x" * chunk
            left = payload_size
            while left:
                part = block[: min(chunk, left)]
                sock.sendall(part)
                sent += len(part)
                left -= len(part)
        except OSError:
            pass  # the broker closed the connection: what it answered before that says why
        try:
            header, body = read_packet(sock)
        except OSError:
            return Answer("closed", None, sent)
        packet = {0x40: "puback", 0xE0: "disconnect"}.get(header & 0xF0, hex(header))
        if packet == "puback":
            return Answer(packet, body[2] if len(body) > 2 else 0, sent)
        return Answer(packet, body[0] if body else 0, sent)


def connect_packet(client_id: str, username: str | None, password: str | None, declared: int | None = None) -> bytes:
    """An MQTT 5 CONNECT with a clean start; `declared` claims another remaining length than its own."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", 60) + b"\x00" + utf8(client_id)
    body += (utf8(username) if username else b"") + (utf8(password) if password else b"")
    return bytes([0x10]) + varint(len(body) if declared is None else declared) + body


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One packet's first byte and its body; ConnectionError if the connection ends first."""
    header = receive(sock, 1)[0]
    length, shift = 0, 0
    while True:
        byte = receive(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return header, receive(sock, length)


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise ConnectionError("closed by the broker")
        data += part
    return data


def utf8(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack("!H", len(encoded)) + encoded
