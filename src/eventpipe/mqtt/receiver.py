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
  not decoded (eventpipe sets no Topic Alias Maximum), only looked through
  for a Message Expiry Interval, which the worker counts. Other packets, and
  a PUBLISH split across reads, go through paho's own reader, which takes its
  bytes from the same buffer;
- the messages of one read reach the application in one `on_burst` call,
  always made before any other packet or a lost connection is handled, so a
  burst never mixes two connections;
- `ack_many` queues the PUBACKs of a whole batch as one write;
- it is a Valve (eventpipe.mqtt.valve): while the worker has no room, paho's
  loop reads nothing but keeps writing acks, pinging and reconnecting.

Anything unusual (QoS 2, MQTT 3, a packet that does not decode) goes through
paho's stock code. The paho internals all this builds on are read here and
nowhere else, and checked when the worker's client is made: a paho that lacks
one stops the worker, naming it, rather than running a broken fast path. Only a
caller that asks for paho's own reader (`stock`, as a test does) gets that,
still behind the Valve.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from eventpipe.errors import DependencyError
from eventpipe.mqtt import valve
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.mqtt.valve import Valve
from eventpipe.mqtt.wire import (
    MESSAGE_EXPIRY,
    PUBACK,
    PUBLISH,
    decode_length,
    holds_property,
    puback_packets,
)

READ_SIZE = 64 * 1024
# (packet id, qos, topic, payload, dup, expiring) as read from the wire; expiring: it carries an MQTT 5
# Message Expiry Interval, with which the broker may drop it, acknowledged, before the worker has it.
Received = tuple[int, int, str, bytes, bool, bool]
# paho internals the Receiver builds on: methods of paho's Client it overrides or calls,
METHODS = (
    "_sock_recv",
    "_packet_read",
    "_packet_handle",
    "_handle_publish",
    "_packet_queue",
    "_packet_write",
    "_loop_rc_handle",
)
# the attributes it reads or sets, which paho's constructor sets,
ATTRIBUTES = ("_sock", "_in_packet", "_manual_ack", "_protocol", "_msgtime_mutex", "_last_bytes_received")
# and what it reads of `_in_packet`, the packet paho is reading.
IN_PACKET = ("command", "packet")
# paho's network thread, None once it has ended: read on either client (`network_alive`).
THREAD = "_thread"
PAHO = "paho.mqtt.client.Client"


def receiving_client(
    address: MqttAddress,
    client_id: str,
    on_burst: Callable[[list[Received]], None],
    *,
    ca_file: Path | None = None,
    stock: bool = False,
) -> Valve:
    """The worker's client, for manual acks: a Receiver handing bursts to `on_burst`, or with `stock`
    a Valve reading through paho's own code, which hands each message to its on_message. Checked for every paho internal
    this module reads: a paho that lacks one raises here, at the worker's start."""
    client = make_client(
        address, client_id, manual_ack=True, client_class=Valve if stock else Receiver, ca_file=ca_file
    )
    lacking = missing(client)
    if lacking:
        raise DependencyError(
            f"paho-mqtt {paho.mqtt.__version__} lacks {', '.join(lacking)}, which eventpipe's MQTT receive path "
            f"(eventpipe.mqtt.receiver) builds on: install {_required_paho()}"
        )
    if isinstance(client, Receiver):
        client.on_burst = on_burst
    return cast(Valve, client)  # made of client_class


def missing(client: mqtt.Client) -> list[str]:
    """The internals read here that `client` lacks: the network thread and the Valve's on any client,
    every one on a Receiver."""
    methods: tuple[str, ...] = valve.METHODS
    attributes: tuple[str, ...] = (THREAD, *valve.ATTRIBUTES)
    if isinstance(client, Receiver):
        methods, attributes = (*methods, *METHODS), (*attributes, *ATTRIBUTES)
    # Looked up on paho's class: the Receiver defines most of them itself.
    lacking = [f"{name}()" for name in dict.fromkeys(methods) if not callable(getattr(mqtt.Client, name, None))]
    lacking += [name for name in dict.fromkeys(attributes) if not hasattr(client, name)]
    if isinstance(client, Receiver):
        in_packet = getattr(client, "_in_packet", None)
        keys = in_packet.keys() if isinstance(in_packet, dict) else ()
        lacking += [f"_in_packet[{key!r}]" for key in IN_PACKET if key not in keys]
    return [f"{PAHO}.{name}" for name in lacking]


def _required_paho() -> str:
    """eventpipe's requirement on paho-mqtt, as installed (pyproject.toml's)."""
    try:
        return next(item for item in metadata.requires("eventpipe") or () if item.startswith("paho-mqtt"))
    except (metadata.PackageNotFoundError, StopIteration):
        return "the paho-mqtt version eventpipe's pyproject.toml names"


def network_alive(client: mqtt.Client) -> bool:
    """False once paho's network thread has ended (an exception in a callback ends it)."""
    thread = getattr(client, THREAD)
    return thread is not None and bool(thread.is_alive())


def acknowledge(client: mqtt.Client, packet_ids: list[int]) -> None:
    """PUBACKs for QoS 1 messages: one queued write on a Receiver, one paho ack() each on paho's own client."""
    if isinstance(client, Receiver):
        client.ack_many(packet_ids)
        return
    for packet_id in packet_ids:
        client.ack(packet_id, 1)


class Receiver(Valve):
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
            and (remaining := decode_length(buffer, start + 1, len(buffer))) is not None
        ):
            length, cursor = remaining
            end = cursor + length
            if end <= len(buffer):
                received = self._decode(buffer[start], buffer, cursor, end)
                if received is not None:
                    self._read_pos = end
                    self._burst.append(received)
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
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
        # The properties are skipped, not decoded: their length, then them, looked through only for an expiry.
        properties = decode_length(data, position, end)
        if properties is None:
            return None
        skip, position = properties
        if position + skip > end:
            return None
        expiring = bool(skip) and holds_property(data, position, position + skip, MESSAGE_EXPIRY)
        if expiring is None:
            return None
        position += skip
        return (mid, qos, topic, data[position:end], bool(header & 0x08), expiring)

    def _flush(self) -> None:
        if self._burst:
            burst, self._burst = self._burst, []
            self.on_burst(burst)
