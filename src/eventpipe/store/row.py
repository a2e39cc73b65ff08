"""Rows of the read queries as values: an event (store.query.EVENT_FIELDS) and a dead letter
(store.query.DEAD_LETTER_FIELDS)."""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.events import Event


class StoredDeadLetter(NamedTuple):
    dead_letter_id: str
    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int
    status: str = "pending"  # of its replay: pending, replayed or failed


def event_row(row: tuple[object, ...]) -> Event:
    """A row of EVENT_FIELDS as an Event."""
    event_id, event_type, timestamp_ms, received_ms, user_id, topic, properties = row
    return Event(
        str(event_id),
        str(event_type),
        int(str(timestamp_ms)),
        int(str(received_ms)),
        None if user_id is None else str(user_id),
        str(topic),
        str(properties),
    )


def dead_letter_row(row: tuple[object, ...]) -> StoredDeadLetter:
    """A row of DEAD_LETTER_FIELDS as a StoredDeadLetter."""
    dead_letter_id, received_ms, topic, reason, detail, payload, payload_size = row
    return StoredDeadLetter(
        str(dead_letter_id),
        int(str(received_ms)),
        str(topic),
        str(reason),
        str(detail),
        payload if isinstance(payload, bytes) else str(payload).encode(),
        int(str(payload_size)),
    )
