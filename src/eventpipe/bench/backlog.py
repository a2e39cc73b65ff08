"""Identical backlogs: persistent sessions that subscribe and leave, then one burst of QoS 1 events.

Mosquitto queues every published message once per subscribed session, so one
publish of N events gives each session the same N, in the same order, and the
consumers compared in a run drain exactly the same bytes.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from eventpipe.bench.publisher import Publisher
from eventpipe.errors import BrokerError
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.producer.demo import demo_event

TOPIC_FILTER = "events/#"
SESSION_EXPIRY_S = 3600


def demo_messages(count: int, seed: int = 7, start: datetime | None = None) -> list[tuple[str, bytes]]:
    """`count` realistic (topic, payload) pairs, a millisecond apart, as `eventpipe publish` sends them."""
    rng = random.Random(seed)
    moment = start or datetime.now(UTC) - timedelta(hours=1)
    step = timedelta(milliseconds=1)
    messages = []
    for _ in range(count):
        event_type, payload = demo_event(rng, moment)
        messages.append((f"events/{event_type}", json.dumps(payload, separators=(",", ":")).encode()))
        moment += step
    return messages


def open_session(url: str, client_id: str, topic_filter: str = TOPIC_FILTER, timeout: float = 10.0) -> None:
    """Create a fresh persistent session subscribed to `topic_filter` (QoS 1), then leave it queueing."""
    address = MqttAddress.parse(url)
    client = make_client(address, client_id)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect(address.host, address.port, clean_start=True, properties=props)
    client.loop_start()
    try:
        client.subscribe(topic_filter, options=SubscribeOptions(qos=1))
        if not subscribed.wait(timeout):
            raise BrokerError(f"no SUBACK for the benchmark session {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def fill(
    url: str, client_ids: Sequence[str], messages: list[tuple[str, bytes]], topic_filter: str = TOPIC_FILTER
) -> None:
    """Queue `messages` for every session in `client_ids` (for a shared filter: split across them)."""
    for client_id in client_ids:
        open_session(url, client_id, topic_filter)
    publisher = Publisher(url, f"bench-backlog-{uuid.uuid4().hex[:8]}")
    try:
        publisher.publish_all(messages)
        if not publisher.wait_acked(len(messages)) or publisher.refused:
            raise BrokerError(
                f"the broker acknowledged {publisher.acked} of {len(messages)} backlog messages "
                f"({publisher.refused} refused)"
            )
    finally:
        publisher.close()
