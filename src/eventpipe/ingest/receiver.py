"""paho's MQTT client with a receive path cheap enough for the worker.

Profiled on a backlog drain, stock paho 2.2 spends about 100 microseconds of
CPU per QoS 1 message before the application sees it: a select() and three
recv() calls per packet, a Properties object decoded per PUBLISH, an
MQTTMessage, a topic-matcher walk and two locks per callback; and per
acknowledgement a wake-up write to its socketpair and a send() of 4 bytes.
The worker needs none of that per message. This subclass changes four things
and leaves everything else (connect, sessions, keepalive, reconnects, TLS,
other packet types) to paho:

- reads: one recv() of up to READ_SIZE bytes per pass of paho's loop, and
  every complete packet in it is handled before the loop selects again;
- PUBLISH at QoS 0/1 (MQTT v5, manual acks) lying whole in that buffer is
  sliced into topic, packet id and payload right there; its properties are
  skipped, never decoded (eventpipe sets no Topic Alias Maximum, so none
  carries meaning for it). Other packets, and a PUBLISH split across reads, go
  through paho's own reader, which takes its bytes from the same buffer;
- the messages of one read reach the application in one `on_burst` call,
  always made before any other packet or a lost connection is handled, so a
  burst never mixes two connections;
- `ack_many` queues the PUBACKs of a whole batch as one write.

Anything unusual (QoS 2, MQTT 3, a packet that does not decode, a paho
without the internals relied on here) goes through paho's stock code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

READ_SIZE = 64 * 1024
PUBLISH = 0x30
PUBACK = 0x40
# (packet id, qos, topic, payload, dup) as read from the wire.
Received = tuple[int, int, str, bytes, bool]
# paho internals this class builds on; checked once, so a paho that lacks them
# gets its stock behaviour instead of a broken fast path.
_INTERNALS = ("_sock_recv", "_packet_read", "_packet_handle", "_handle_publish", "_packet_queue", "_loop_rc_handle")


def supported() -> bool:
    return all(callable(getattr(mqtt.Client, name, None)) for name in _INTERNALS)


def puback_packets(mids: list[int]) -> bytes:
    """PUBACKs for `mids`, back to back: each is 0x40, length 2, the packet id (success needs no reason code)."""
    return struct.pack(f"!{len(mids)}I", *[0x40020000 | mid for mid in mids])


class Receiver(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_burst: Callable[[list[Received]], None] = lambda _burst: None
        self._burst: list[Received] = []
        self._read_buffer: bytes = b""
        self._read_pos = 0
        self._read_sock: object = None
        self._may_recv = True

    def ack_many(self, mids: list[int]) -> None:
        """Acknowledge QoS 1 messages by packet id, all in one queued write and one loop wake-up."""
        if mids:
            self._packet_queue(PUBACK, puback_packets(mids), 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # Stock paho reads one packet per select(); this reads what one recv()
        # brings and handles every complete packet in it. One recv() per pass,
        # so paho's loop still gets to write acks and keep the connection alive.
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        self._may_recv = True
        try:
            while True:
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()
                if rc > 0:
                    self._flush()  # what came before the failure came on this connection
                    return self._loop_rc_handle(rc)
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
        finally:
            self._flush()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_sock is not self._sock:
            # A new connection: nothing buffered from the old one may be read as its bytes.
            self._read_buffer, self._read_pos, self._read_sock = b"", 0, self._sock
        position = self._read_pos
        if position >= len(self._read_buffer):
            if not self._may_recv:
                raise BlockingIOError
            self._may_recv = False
            data = super()._sock_recv(READ_SIZE)
            if not data:
                return data  # closed: paho sees the empty read and handles the loss
            self._read_buffer, position = data, 0
        end = position + bufsize
        self._read_pos = end
        return self._read_buffer[position:end]

    def _packet_handle(self) -> MQTTErrorCode:
        if self._in_packet["command"] & 0xF0 != PUBLISH:
            # CONNACK, DISCONNECT and the rest may change whose connection this
            # is: hand over what came before them first.
            self._flush()
        return super()._packet_handle()

    def _packet_read(self) -> MQTTErrorCode:
        # A PUBLISH wholly in the buffer is taken straight from it; anything
        # else, and a packet split across reads, goes through paho's reader.
        buffer, start = self._read_buffer, self._read_pos
        if (
            self._in_packet["command"] == 0
            and self._read_sock is self._sock
            and start + 1 < len(buffer)
            and buffer[start] & 0xF0 == PUBLISH
        ):
            length, shift, cursor = 0, 0, start + 1
            while cursor < len(buffer) and shift <= 21:
                byte = buffer[cursor]
                cursor += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    end = cursor + length
                    if end <= len(buffer):
                        received = self._decode(buffer[start], buffer, cursor, end)
                        if received is not None:
                            self._read_pos = end
                            self._burst.append(received)
                            return MQTTErrorCode.MQTT_ERR_SUCCESS
                    break
        return super()._packet_read()

    def _handle_publish(self) -> MQTTErrorCode:
        # Reached for packets that came through paho's reader.
        packet = bytes(self._in_packet["packet"])
        received = self._decode(self._in_packet["command"], packet, 0, len(packet))
        if received is None:
            self._flush()
            return super()._handle_publish()
        self._burst.append(received)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _decode(self, header: int, data: bytes, start: int, end: int) -> Received | None:
        """The PUBLISH whose variable header and payload are data[start:end]; None leaves it to paho."""
        qos = (header & 0x06) >> 1
        if qos > 1 or not self._manual_ack or self._protocol != mqtt.MQTTv5 or end - start < 3:
            return None
        position = start + 2 + ((data[start] << 8) | data[start + 1])
        if position + (2 if qos else 0) >= end:
            return None
        try:
            topic = data[start + 2 : position].decode()
        except UnicodeDecodeError:
            return None
        mid = 0
        if qos:
            mid = (data[position] << 8) | data[position + 1]
            position += 2
        # Property length, an MQTT variable byte integer; the properties are skipped.
        skip, shift = 0, 0
        while True:
            if position >= end or shift > 21:
                return None
            byte = data[position]
            position += 1
            skip |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        position += skip
        if position > end:
            return None
        return (mid, qos, topic, data[position:end], bool(header & 0x08))

    def _flush(self) -> None:
        if self._burst:
            burst, self._burst = self._burst, []
            self.on_burst(burst)
