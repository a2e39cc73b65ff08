"""Publishing arbitrary payloads, as a misbehaving producer would."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from paho.mqtt.properties import Properties

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.mqtt.wire import CONNACK, DISCONNECT, PUBACK, connect_packet, publish_head, publish_packet, read_packet


def publish_raw(
    url: str,
    messages: Iterable[tuple[str, bytes]],
    qos: int = 1,
    retain: bool = False,
    properties: Properties | None = None,
) -> int:
    """Publish (topic, payload) pairs, with MQTT 5 `properties` if given, and wait for every PUBACK; return how
    many were acknowledged."""
    address = MqttAddress.parse(url)
    client = make_client(address, f"test-producer-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=qos, retain=retain, properties=properties) for topic, payload in messages
        ]
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
        assert header == CONNACK and body[1] == 0, f"CONNACK refused: {body!r}"
        head = publish_head(topic, 1, payload_size)
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
        packet = {PUBACK: "puback", DISCONNECT: "disconnect"}.get(header & 0xF0, hex(header))
        if packet == "puback":
            return Answer(packet, body[2] if len(body) > 2 else 0, sent)
        return Answer(packet, body[0] if body else 0, sent)


# The broker's answer to a QoS 2 PUBLISH it takes: it holds the message until the PUBREL.
PUBREC = 0x50


def unreleased(url: str, count: int, size: int = 60_000) -> tuple[int, bytes]:
    """Send up to `count` QoS 2 PUBLISHes of `size` bytes and never release one (no PUBREL), as a hostile
    client would: the broker holds each until released. One at a time, each once the one before is answered,
    so that a broker refusing them is read saying so (a close with unread bytes would be a reset instead).
    (The first answer that is not PUBREC, or the last PUBREC; its body.)"""
    address = MqttAddress.parse(url)
    header, body = 0, b""
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(connect_packet(f"unreleased-{uuid.uuid4().hex[:8]}", address.username, address.password))
        header, body = read_packet(sock)
        assert header == CONNACK and body[1] == 0, f"CONNACK refused: {body!r}"
        for packet_id in range(1, count + 1):
            try:
                sock.sendall(publish_packet("events/held", b"x" * size, packet_id, qos=2))
                header, body = read_packet(sock)
            except OSError:
                return 0, b""
            if header & 0xF0 != PUBREC:
                break
        return header & 0xF0, body
