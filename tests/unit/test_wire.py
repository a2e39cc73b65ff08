"""The MQTT wire format eventpipe writes and reads itself: lengths encode as paho encodes them and decode back,
a length that needs more bytes or breaks the four-byte bound is no length, and packets read off a socket
arrive whole however the bytes come."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv5
from paho.mqtt.enums import CallbackAPIVersion

from eventpipe.mqtt.wire import (
    CONNECT,
    MAX_LENGTH,
    MESSAGE_EXPIRY,
    PUBLISH,
    connect_packet,
    decode_length,
    encode_length,
    holds_property,
    publish_head,
    publish_packet,
    read_packet,
)

# Where a variable byte integer gains a byte, each side of it.
EDGES = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_LENGTH]


@pytest.mark.parametrize("value", EDGES)
def test_a_length_encodes_as_paho_encodes_it_and_decodes_back(value: int) -> None:
    paho = mqtt.Client(CallbackAPIVersion.VERSION2)
    encoded = encode_length(value)
    assert encoded == bytes(paho._pack_remaining_length(bytearray(), value))
    framed = b"\xff" + encoded + b"rest"
    assert decode_length(framed, 1, len(framed)) == (value, 1 + len(encoded))


def test_a_length_cut_short_or_over_four_bytes_is_none() -> None:
    encoded = encode_length(2_097_152)  # four bytes
    for end in range(len(encoded)):
        assert decode_length(encoded, 0, end) is None, "more bytes are needed"
    assert decode_length(b"\x80\x80\x80\x80\x01", 0, 5) is None, "MQTT has no fifth length byte"
    with pytest.raises(ValueError, match="variable byte integer"):
        encode_length(MAX_LENGTH + 1)
    with pytest.raises(ValueError, match="variable byte integer"):
        encode_length(-1)


def test_publish_properties_are_looked_through_for_one_and_refused_when_they_do_not_decode() -> None:
    expiry, alias = b"\x02\x00\x00\x00\x3c", b"\x23\x00\x01"
    user = b"\x26\x00\x01k\x00\x02vv"
    subscription = b"\x0b\xac\x02"  # 300, a variable byte integer of two bytes
    found, other = user + subscription + expiry, user + subscription + alias
    assert holds_property(found, 0, len(found), MESSAGE_EXPIRY)
    assert holds_property(other, 0, len(other), MESSAGE_EXPIRY) is False
    assert holds_property(b"\x00" + found, 1, len(found) + 1, MESSAGE_EXPIRY), "from where they start"
    assert holds_property(b"", 0, 0, MESSAGE_EXPIRY) is False
    # Not PUBLISH properties: an unknown identifier, a value past the end, a length past the end.
    assert holds_property(b"\x7f\x00", 0, 2, MESSAGE_EXPIRY) is None
    assert holds_property(alias, 0, 2, MESSAGE_EXPIRY) is None
    assert holds_property(b"\x26\x00\x09k", 0, 4, MESSAGE_EXPIRY) is None


def test_a_publish_is_what_paho_decodes() -> None:
    packet = publish_packet("events/ünï", b'{"a":1}', 513, qos=1, dup=True)
    length, start = decode_length(packet, 1, len(packet)) or (0, 0)
    assert length == len(packet) - start
    decoded = _packet.decode_publish(packet[0], packet[start:], MQTTv5)
    assert (decoded.topic.decode(), decoded.mid, decoded.qos, decoded.dup, bytes(decoded.payload)) == (
        "events/ünï",
        513,
        1,
        True,
        b'{"a":1}',
    )
    # The head announces a payload it does not hold, for a producer that streams it.
    assert publish_head("events/x", 7, 1_000_000) + b"x" * 1_000_000 == publish_packet("events/x", b"x" * 1_000_000, 7)
    assert publish_packet("events/x", b"{}", 0, qos=0)[0] == PUBLISH  # QoS 0: no packet id, no flags


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_packets_are_read_whole_whatever_the_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    big = publish_packet("events/big", b"x" * 300_000, 1)  # a three-byte length
    connect = connect_packet("c", "user", "pass")
    stream = big + connect

    def trickle() -> None:
        for start in range(0, len(stream), 7_001):
            theirs.sendall(stream[start : start + 7_001])

    writer = threading.Thread(target=trickle)
    writer.start()
    assert read_packet(ours) == (big[0], big[4:])
    header, body = read_packet(ours)
    writer.join()
    assert (header, body) == (CONNECT, connect[2:])
    assert body[7] == 0x02 | 0x80 | 0x40, "clean start, user name and password flags"


@pytest.mark.parametrize(
    ("sent", "error"),
    [(b"\x30\x80\x80\x80\x80\x01", "four bytes"), (b"\x30\x05ab", "closed"), (b"\x30", "closed")],
)
def test_a_connection_that_ends_or_is_not_mqtt_is_an_error(
    pair: tuple[socket.socket, socket.socket], sent: bytes, error: str
) -> None:
    ours, theirs = pair
    theirs.sendall(sent)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError, match=error):
        read_packet(ours)
