"""The worker's MQTT receive path: what it reads off the wire is what paho would have decoded, in order,
whatever way the bytes are split, and nothing of one connection is handed over after another packet."""

from __future__ import annotations

import random
import select
import socket
from collections.abc import Iterator

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.client import MQTTMessage, MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.errors import DependencyError
from eventpipe.ingest.consumer import Consumer
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.mqtt import receiver
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.mqtt.receiver import Received, Receiver
from eventpipe.mqtt.wire import puback_packets, publish_packet


def publish(topic: str, payload: bytes, qos: int = 1, mid: int = 1, dup: bool = False, props: bytes = b"\x00") -> bytes:
    return publish_packet(topic, payload, mid, qos=qos, dup=dup, properties=props)


def properties(expiry: bool = True) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.PayloadFormatIndicator = 1
    if expiry:
        props.MessageExpiryInterval = 60
    props.ContentType = "application/json"
    props.ResponseTopic = "replies/x"
    props.CorrelationData = b"\x00\x01"
    props.SubscriptionIdentifier = [300]  # a two-byte variable byte integer
    props.UserProperty = [("trace", "x" * 200), ("k", "v")]  # long enough for a two-byte property length
    return bytes(props.pack())  # type: ignore[no-untyped-call]


def paho_reads(packet: bytes) -> Received:
    """The oracle: paho's own decoder. The remaining length is skipped here, not read with eventpipe's
    decoder, which the receiver under test uses."""
    header, rest = packet[0], packet[1:]
    while rest[0] & 0x80:
        rest = rest[1:]
    result = _packet.decode_publish(header, rest[1:], MQTTv5)
    expiring = hasattr(result.properties, "MessageExpiryInterval")
    return (result.mid, result.qos, result.topic.decode(), bytes(result.payload), result.dup, expiring)


@pytest.fixture
def wired() -> Iterator[tuple[Receiver, socket.socket, list[list[Received]]]]:
    client = make_client(MqttAddress("127.0.0.1", 1883), "test-receiver", manual_ack=True, client_class=Receiver)
    assert isinstance(client, Receiver)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    bursts: list[list[Received]] = []
    client.on_burst = bursts.append
    yield client, broker, bursts
    ours.close()
    broker.close()


def read_all(client: Receiver) -> None:
    """Run paho's read step until the socket is drained (each step does one recv)."""
    client.loop_read()
    for _ in range(100_000):
        if not select.select([client._sock], [], [], 0)[0]:
            return
        client.loop_read()
    raise AssertionError("the socket never drained")


def test_paho_has_the_internals_the_receiver_builds_on() -> None:
    address = MqttAddress("127.0.0.1", 1883)
    assert receiver.missing(make_client(address, "test", manual_ack=True, client_class=Receiver)) == []
    assert receiver.missing(make_client(address, "test", manual_ack=True)) == []


def test_an_internal_missing_from_paho_is_named() -> None:
    client = make_client(MqttAddress("127.0.0.1", 1883), "test", manual_ack=True, client_class=Receiver)
    del client._in_packet
    assert receiver.missing(client) == [
        "paho.mqtt.client.Client._in_packet",
        "paho.mqtt.client.Client._in_packet['command']",
        "paho.mqtt.client.Client._in_packet['packet']",
    ]
    client._in_packet = {"command": 0}
    assert receiver.missing(client) == ["paho.mqtt.client.Client._in_packet['packet']"]


def test_paho_s_own_reader_is_checked_for_what_the_valve_uses() -> None:
    # The valve shuts paho's own reader too when the worker is full, and pings through these: unchecked, a
    # paho without them would end the network thread the first time the worker filled up.
    client = make_client(MqttAddress("127.0.0.1", 1883), "test", manual_ack=True)
    del client._last_bytes_received
    assert receiver.missing(client) == ["paho.mqtt.client.Client._last_bytes_received"]


def consumer(stock_paho: bool = False) -> Consumer:
    return Consumer(Settings(), len, IngestMetrics(CollectorRegistry()), stock_paho=stock_paho)


def test_a_paho_without_them_stops_the_worker_naming_what_it_lacks_and_its_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(mqtt.Client, "_handle_publish")
    with pytest.raises(DependencyError) as refused:
        consumer()
    message = str(refused.value)
    assert "paho.mqtt.client.Client._handle_publish()" in message
    assert f"paho-mqtt {paho.mqtt.__version__} " in message
    assert "install paho-mqtt" in message
    # Unless paho's own reader is asked for, as a test of that fallback does: it reads none of the receiver's.
    consumer(stock_paho=True)


def test_the_network_thread_is_read_on_either_client(monkeypatch: pytest.MonkeyPatch) -> None:
    original = mqtt.Client.__init__

    def without_thread(self: mqtt.Client, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        del self._thread

    monkeypatch.setattr(mqtt.Client, "__init__", without_thread)
    for stock_paho in (False, True):
        with pytest.raises(DependencyError, match=r"Client\._thread"):
            consumer(stock_paho)


@pytest.mark.parametrize("read_size", [1, 2, 7, 100, 64 * 1024])
def test_whatever_the_split_every_message_arrives_as_paho_decodes_it(
    wired: tuple[Receiver, socket.socket, list[list[Received]]], monkeypatch: pytest.MonkeyPatch, read_size: int
) -> None:
    client, broker, bursts = wired
    monkeypatch.setattr(receiver, "READ_SIZE", read_size)
    rng = random.Random(read_size)
    packets = [
        publish("events/click", b'{"a":1}', mid=1),
        publish("events/ünïcode/täg", '{"b":"ü"}'.encode(), mid=2, dup=True),
        publish("events/empty", b"", mid=3),
        publish("events/qos0", b"{}", qos=0),
        publish("events/props", b'{"c":3}', mid=65_535, props=properties()),
        # Every other PUBLISH property, and no expiry: looked through, not counted.
        publish("events/no-expiry", b'{"d":4}', mid=5, props=properties(expiry=False)),
    ] * 5 + [publish("events/big", b"x" * 20_000, mid=4)]  # a remaining length of three bytes
    stream = b"".join(packets)
    position = 0
    while position < len(stream):
        step = rng.randint(1, 300)
        broker.sendall(stream[position : position + step])
        position += step
        read_all(client)
    assert [item for burst in bursts for item in burst] == [paho_reads(packet) for packet in packets]


def test_a_burst_is_handed_over_before_the_next_other_packet_is_handled(
    wired: tuple[Receiver, socket.socket, list[list[Received]]],
) -> None:
    client, broker, _bursts = wired
    seen: list[str] = []
    client.on_burst = lambda burst: seen.append(f"burst of {len(burst)}")
    handle_pingresp = client._handle_pingresp

    def pingresp() -> object:
        seen.append("pingresp")
        return handle_pingresp()

    client._handle_pingresp = pingresp  # type: ignore[method-assign]
    broker.sendall(publish("events/a", b"{}", mid=1) + publish("events/b", b"{}", mid=2) + b"\xd0\x00")
    broker.sendall(publish("events/c", b"{}", mid=3))
    read_all(client)
    assert seen == ["burst of 2", "pingresp", "burst of 1"]


def test_qos_2_is_left_to_paho(wired: tuple[Receiver, socket.socket, list[list[Received]]]) -> None:
    client, broker, bursts = wired
    messages: list[MQTTMessage] = []
    client.on_message = lambda _client, _userdata, message: messages.append(message)
    broker.sendall(publish("events/a", b"{}", mid=1) + publish("events/q2", b"{}", qos=2, mid=9))
    read_all(client)
    assert bursts == [[(1, 1, "events/a", b"{}", False, False)]]
    assert broker.recv(100) == b"\x50\x02\x00\x09"  # paho's PUBREC; it delivers on PUBREL
    broker.sendall(b"\x62\x02\x00\x09")
    read_all(client)
    assert [(message.topic, message.mid) for message in messages] == [("events/q2", 9)]


def test_acks_go_out_as_one_write_of_back_to_back_pubacks(
    wired: tuple[Receiver, socket.socket, list[list[Received]]],
) -> None:
    client, broker, _bursts = wired
    assert puback_packets([1, 258, 65_535]) == b"\x40\x02\x00\x01\x40\x02\x01\x02\x40\x02\xff\xff"
    client.ack_many([7, 8])
    assert broker.recv(100) == b"\x40\x02\x00\x07\x40\x02\x00\x08"
