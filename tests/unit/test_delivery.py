"""What a held message costs the worker's byte budget: its payload and its topic, in bytes."""

from __future__ import annotations

import pytest

from eventpipe.ingest.delivery import Delivery, held_size


def delivery(topic: str, payload: bytes) -> Delivery:
    return Delivery(mid=1, qos=1, topic=topic, payload=payload, received_ms=0, arrived=0.0, generation=0, size=0)


@pytest.mark.parametrize(
    ("topic", "payload", "size"),
    [
        ("events/click", b'{"a": 1}', 12 + 8),
        ("events/" + "t" * 60_000, b"", 60_007),  # a long topic costs what a long payload does
        ("events/" + "\U0001f600" * 1000, b"x", 7 + 4000 + 1),  # bytes, not characters
        ("events/caf\u00e9", b"", 12),
    ],
)
def test_a_held_message_costs_its_payload_and_its_topic_in_bytes(topic: str, payload: bytes, size: int) -> None:
    assert held_size(delivery(topic, payload)) == size
