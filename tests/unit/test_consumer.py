"""What a held message costs the worker's byte budget: its payload, its topic and what was parsed from it, in bytes."""

from __future__ import annotations

import pytest

from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.ingest.consumer import Delivery, held_size


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


def test_a_parsed_message_costs_its_event_too_and_a_rejected_one_its_dead_letter() -> None:
    # Parsed on receipt, a message is held twice until committed: as sent (a refused row's dead
    # letter keeps it) and as its event, whose properties may be larger than the payload.
    limits = Limits()
    sent = b'{"n":[' + b",".join([b"1E5"] * 10) + b"]}"
    payload = b'{"event_id":"e-1","event_type":"click","user_id":"caf\\u00e9",' + sent[1:]
    raw = delivery("events/click", payload)
    event = parse(raw.topic, raw.payload, 0, limits)
    assert isinstance(event, Event)
    parsed_bytes = len(event.properties) + len("e-1") + len("click") + len("caf\u00e9".encode())
    assert held_size(raw._replace(parsed=event)) == held_size(raw) + parsed_bytes
    assert len(event.properties) > 2 * len(sent)  # 1E5 comes back as 100000.0

    bad = delivery("events/click", b"not json")
    rejection = parse(bad.topic, bad.payload, 0, limits)
    assert isinstance(rejection, Rejection)
    assert held_size(bad._replace(parsed=rejection)) == held_size(bad) + len(b"not json") + len(rejection.detail)
