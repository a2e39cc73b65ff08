"""A message as the worker holds it, and what holding it costs."""

from __future__ import annotations

from typing import NamedTuple


class Delivery(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int  # wall clock, stored as received_at
    arrived: float  # monotonic, for batch age
    generation: int  # which connection it came on; acks go only to the current one
    size: int  # bytes the payload had; `payload` holds at most max_payload_bytes + 1 of them
    digest: str = ""  # of the whole payload, when `payload` holds only its start (its dead letter's id)


def held_size(item: Delivery) -> int:
    """What holding `item` costs, as EVENTPIPE_MAX_HELD_BYTES counts it: its payload and its topic, which
    may be as long (an attack held 20,000 messages of 60 KiB topics and empty payloads: 1.5 GiB, while
    payloads alone counted 1.2 MiB)."""
    topic = item.topic
    # Bytes, not characters: a topic of 4-byte characters would count a quarter of what it holds.
    return len(item.payload) + (len(topic) if topic.isascii() else len(topic.encode()))
