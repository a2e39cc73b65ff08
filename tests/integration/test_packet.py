"""Packet limits on a real broker and worker: a message over the broker's limit is refused at the edge,
counted, and costs neither the broker nor the worker memory; one under it takes the normal path; and a
broker that would accept more than the worker takes drops it for the worker, where it can be seen."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from eventpipe.mqtt import packet
from eventpipe.mqtt.address import MqttAddress
from eventpipe.process import rss_bytes
from eventpipe.stack import journal
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from tests.support.memory import peak_growth
from tests.support.mqtt import publish_raw, stream_publish
from tests.support.pipeline import Running, running_worker, settings_for
from tests.support.services import MAX_PAYLOAD_BYTES, ContainerBroker, LocalBroker, running_broker
from tests.support.wait import wait_until

Broker = LocalBroker | ContainerBroker
LIMIT = packet.broker_limit(MAX_PAYLOAD_BYTES)
TOPIC = "events/upload"
MiB = 1024 * 1024
PACKET_TOO_LARGE = 0x95
TOPIC_ALIAS_INVALID = 0x94


def largest_payload(protocol: MQTTProtocolVersion, qos: int = 1) -> int:
    """The largest payload on TOPIC that Mosquitto takes: it checks the remaining length plus the type
    byte; the rest of the packet is topic, packet id (QoS 1 only) and, in MQTT 5, an empty property length."""
    return LIMIT - 1 - (2 + len(TOPIC)) - (2 if qos else 0) - (1 if protocol == mqtt.MQTTv5 else 0)


def good(prefix: str, count: int) -> list[tuple[str, bytes]]:
    return [("events/click", json.dumps({"event_id": f"{prefix}-{i}"}).encode()) for i in range(count)]


def publish_with(
    url: str,
    protocol: MQTTProtocolVersion,
    payload: bytes,
    topic: str = TOPIC,
    properties: Properties | None = None,
    qos: int = 1,
) -> tuple[bool, list[int]]:
    """Publish one message with paho as a producer would; (acknowledged, or at QoS 0 sent, reasons of the
    disconnects)."""
    address = MqttAddress.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=protocol)
    if address.username:
        client.username_pw_set(address.username, address.password)
    reasons: list[int] = []
    gone = threading.Event()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        reasons.append(reason.value)
        gone.set()

    client.on_disconnect = on_disconnect
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, properties=properties)
        wait_until(lambda: info.is_published() or gone.is_set(), timeout=10, what="a PUBACK or a disconnect")
        return info.is_published(), list(reasons)
    finally:
        client.loop_stop()  # before paho reconnects and resends it
        client.disconnect()


def counts(broker: Broker) -> dict[str, int]:
    return journal.count(broker.log().splitlines())


@pytest.fixture
def run(broker: Broker, clickhouse_dsn: str) -> Iterator[Running]:
    migrate(connect(clickhouse_dsn))
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as running:
        yield running


def test_a_message_over_the_packet_limit_is_refused_at_the_broker_and_counted(broker: Broker, run: Running) -> None:
    assert publish_raw(broker.url, good("before", 100)) == 100
    # Just over the limit, from paho: an MQTT 5 producer is told why (DISCONNECT 0x95), nothing is acknowledged.
    acknowledged, reasons = publish_with(broker.url, mqtt.MQTTv5, b"x" * (largest_payload(mqtt.MQTTv5) + 1))
    assert not acknowledged
    assert reasons[:1] == [PACKET_TOO_LARGE]
    # The attack: 200 MiB in one message. Refused on its header, so neither process reads it.
    with peak_growth(("worker", rss_bytes), ("broker", broker.memory), interval=0.05) as grown:
        answer = stream_publish(broker.url, TOPIC, 200 * MiB)
    assert answer.packet != "puback"
    assert answer.sent < 32 * MiB, f"the broker read {answer.sent >> 20} MiB of it"
    assert grown["worker"] < 32 * MiB, f"the worker grew by {grown['worker'] >> 20} MiB"
    assert grown["broker"] < 32 * MiB, f"the broker grew by {grown['broker'] >> 20} MiB"
    assert publish_raw(broker.url, good("after", 100)) == 100
    wait_until(lambda: run.reader.count_events() == 200, what="every event around them")
    wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 200, what="all acknowledged")
    assert run.metric("eventpipe_messages_received_total") == 200
    assert run.reader.count_dead_letters() == 0
    refused = counts(broker)
    assert refused["refused"] >= 2, refused  # paho's attempt (and any resend) and the stream
    assert refused["dropped"] == 0


def test_a_producer_naming_its_topic_by_alias_is_refused_not_acknowledged(broker: Broker, run: Running) -> None:
    # With an MQTT 5 topic alias a producer's packet fits the broker's limit, and the one the broker sends
    # the worker, topic spelled out, does not: the broker acknowledged such a message, then dropped it for
    # the worker (an attack: a 64 KiB event on a 4 KiB topic, PUBACK, then neither event nor dead letter).
    aliased = Properties(PacketTypes.PUBLISH)
    aliased.TopicAlias = 1
    payload = json.dumps({"event_id": "aliased"}).encode()
    acknowledged, reasons = publish_with(broker.url, mqtt.MQTTv5, payload, "events/" + "a" * 4000, aliased)
    assert not acknowledged
    assert reasons[:1] == [TOPIC_ALIAS_INVALID]
    assert publish_raw(broker.url, good("after", 10)) == 10
    wait_until(lambda: run.reader.count_events() == 10, what="the events after it")
    assert run.reader.event("aliased") is None and run.reader.count_dead_letters() == 0


def test_the_largest_message_the_broker_takes_reaches_the_worker(broker: Broker, run: Running) -> None:
    # An MQTT 3 producer's message grows by a byte on its way to the MQTT 5 worker, and Mosquitto counts
    # the length bytes on the way out only: the worker's limit has room for both, or the broker would
    # acknowledge these and drop them for the worker.
    sizes = {protocol: largest_payload(protocol) for protocol in (mqtt.MQTTv5, mqtt.MQTTv311)}
    for protocol, size in sizes.items():
        payload = str(protocol).encode() * size  # distinct where the dead letter cuts them, or they are one
        assert publish_with(broker.url, protocol, payload) == (True, []), f"MQTT {protocol}: not taken"
    wait_until(lambda: run.reader.count_dead_letters() == 2, what="both dead-lettered as oversize, as before")
    letters = run.reader.dead_letters(None, 10)
    assert sorted((letter.reason, letter.payload_size) for letter in letters) == sorted(
        ("oversize", size) for size in sizes.values()
    )
    assert counts(broker) == {"refused": 0, "dropped": 0}


def test_the_largest_qos_0_message_the_broker_takes_reaches_the_worker(broker: Broker, run: Running) -> None:
    # The broker queues QoS 0 for the worker as QoS 1 (upgrade_outgoing_qos), which adds a packet id on
    # the way out, and an MQTT 3 producer's message gains a property-length byte besides: 3 bytes more
    # than it came in. With room for only one, the broker took the largest such message and dropped it
    # for the worker ("Dropping too large outgoing PUBLISH ... (69634 bytes)"): no event, no dead letter.
    sizes = {protocol: largest_payload(protocol, qos=0) for protocol in (mqtt.MQTTv5, mqtt.MQTTv311)}
    for protocol, size in sizes.items():
        payload = str(protocol).encode() * size
        assert publish_with(broker.url, protocol, payload, qos=0) == (True, []), f"MQTT {protocol}: not sent"
    assert publish_raw(broker.url, good("after", 1)) == 1
    wait_until(lambda: run.reader.count_events() == 1, what="the event after them")
    wait_until(lambda: run.reader.count_dead_letters() == 2, timeout=10, what="both dead-lettered as oversize")
    letters = run.reader.dead_letters(None, 10)
    assert sorted((letter.reason, letter.payload_size) for letter in letters) == sorted(
        ("oversize", size) for size in sizes.values()
    )
    assert counts(broker) == {"refused": 0, "dropped": 0}


def test_a_broker_that_takes_more_than_the_worker_drops_it_for_the_worker_and_it_shows(
    tmp_path: Path, clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A broker set up for a 1 MiB payload limit, a worker for the default: the worker's Maximum Packet Size
    # keeps the larger message off it (it would be read whole), and both sides report the mismatch.
    migrate(connect(clickhouse_dsn))
    with (
        running_broker(tmp_path / "mosquitto", max_payload_bytes=MiB) as broker,
        running_worker(settings_for(broker.url, clickhouse_dsn)) as run,
    ):
        assert run.metric("eventpipe_mqtt_broker_maximum_packet_size_bytes") == packet.broker_limit(MiB)
        assert run.metric("eventpipe_mqtt_maximum_packet_size_bytes") == packet.worker_limit(MAX_PAYLOAD_BYTES)
        assert "set max_packet_size 69632" in caplog.text
        assert publish_raw(broker.url, [(TOPIC, b"z" * (512 * 1024)), *good("marker", 1)]) == 2
        wait_until(lambda: run.reader.count_events() == 1, what="the message after it")
        assert run.metric("eventpipe_messages_received_total") == 1
        wait_until(lambda: counts(broker)["dropped"] == 1, what="the broker's drop in its log")
