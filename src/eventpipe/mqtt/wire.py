"""MQTT v5 packets, where eventpipe writes or reads them itself rather than through paho.

The worker's receive path slices PUBLISH packets out of what it reads, the
benchmark's publisher writes them straight to a socket, and the tests play
hostile producers and brokers: all of them encode and decode here, so that the
variable byte integer (the remaining length, a property length) is written
once. Only what those need: no properties, no QoS 2 flow.
"""

from __future__ import annotations

import socket
import struct

# Packet types: the high nibble of a packet's first byte.
CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
PINGREQ = 0xC0
DISCONNECT = 0xE0
# A variable byte integer has at most four bytes of seven bits each.
MAX_LENGTH = (1 << 28) - 1
NO_PROPERTIES = b"\x00"


def encode_length(value: int) -> bytes:
    """`value` as an MQTT variable byte integer: seven bits a byte, least significant first."""
    if not 0 <= value <= MAX_LENGTH:
        raise ValueError(f"an MQTT variable byte integer holds 0 to {MAX_LENGTH}, not {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_length(data: bytes, position: int, end: int) -> tuple[int, int] | None:
    """The variable byte integer at data[position:end] and the position just after it; None when it
    runs past `end` (more bytes needed) or over four bytes (not MQTT)."""
    value = shift = 0
    while position < end and shift <= 21:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    return None


# MQTT 5 PUBLISH properties (3.3.2.3) by identifier, and how each value is laid out: a size in bytes,
# "v" a variable byte integer, or one "s" per length-prefixed string or binary value.
PUBLISH_PROPERTIES: dict[int, int | str] = {
    0x01: 1,  # Payload Format Indicator
    0x02: 4,  # Message Expiry Interval
    0x03: "s",  # Content Type
    0x08: "s",  # Response Topic
    0x09: "s",  # Correlation Data
    0x0B: "v",  # Subscription Identifier
    0x23: 2,  # Topic Alias
    0x26: "ss",  # User Property
}
MESSAGE_EXPIRY = 0x02


def holds_property(data: bytes, start: int, end: int, wanted: int) -> bool | None:
    """Whether the PUBLISH properties at data[start:end] hold the property `wanted`; None when they
    do not decode as PUBLISH properties."""
    position = start
    while position < end:
        identifier = data[position]
        position += 1
        if identifier == wanted:
            return True
        layout = PUBLISH_PROPERTIES.get(identifier)
        if layout is None:
            return None
        if isinstance(layout, int):
            position += layout
        elif layout == "v":
            decoded = decode_length(data, position, end)
            if decoded is None:
                return None
            position = decoded[1]
        else:
            for _ in layout:
                if position + 2 > end:
                    return None
                position += 2 + ((data[position] << 8) | data[position + 1])
    return False if position == end else None


def string(text: str) -> bytes:
    """An MQTT UTF-8 string: its length in two bytes, then its bytes."""
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keepalive: int = 60,
    declared: int | None = None,
) -> bytes:
    """A CONNECT with a clean start and no properties; `declared` claims another remaining length than its own."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = string("MQTT") + bytes((5, flags)) + struct.pack("!H", keepalive) + NO_PROPERTIES + string(client_id)
    body += (string(username) if username else b"") + (string(password) if password else b"")
    return bytes((CONNECT,)) + encode_length(len(body) if declared is None else declared) + body


def publish_head(
    topic: str, packet_id: int, payload_size: int, *, qos: int = 1, dup: bool = False, properties: bytes = NO_PROPERTIES
) -> bytes:
    """A PUBLISH up to its payload, for a payload of `payload_size` bytes (QoS 0 carries no packet id)."""
    variable = string(topic) + (struct.pack("!H", packet_id) if qos else b"") + properties
    header = PUBLISH | (qos << 1) | (0x08 if dup else 0)
    return bytes((header,)) + encode_length(len(variable) + payload_size) + variable


def publish_packet(
    topic: str, payload: bytes, packet_id: int, *, qos: int = 1, dup: bool = False, properties: bytes = NO_PROPERTIES
) -> bytes:
    return publish_head(topic, packet_id, len(payload), qos=qos, dup=dup, properties=properties) + payload


def puback_packets(packet_ids: list[int]) -> bytes:
    """PUBACKs for `packet_ids`, back to back: each is 0x40, length 2, the packet id (success needs no reason code)."""
    return struct.pack(f"!{len(packet_ids)}I", *[0x40020000 | packet_id for packet_id in packet_ids])


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One packet off a blocking socket: its first byte and the rest after the length. ConnectionError if
    the connection ends first."""
    header = _receive(sock, 1)[0]
    length = _receive(sock, 1)
    while length[-1] & 0x80 and len(length) < 4:
        length += _receive(sock, 1)
    decoded = decode_length(length, 0, len(length))
    if decoded is None:
        raise ConnectionError(f"not MQTT: a remaining length of more than four bytes ({length!r})")
    return header, _receive(sock, decoded[0])


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise ConnectionError("the connection was closed")
        data += part
    return data
