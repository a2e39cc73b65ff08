"""Publishing arbitrary payloads, as a misbehaving producer would."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

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
