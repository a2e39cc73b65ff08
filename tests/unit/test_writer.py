"""Copies of an event within one batch are written once, the first received (store.writer.first_copies)."""

from __future__ import annotations

from eventpipe.events import Event
from eventpipe.store.writer import first_copies


def copy(event_id: str, timestamp_ms: int, kind: str = "click", received_ms: int = 0) -> Event:
    return Event(event_id, kind, timestamp_ms, received_ms, None, "events/x", "{}")


def test_the_first_copy_of_each_key_is_kept_and_every_copy_points_at_it() -> None:
    events = [copy("a", 1), copy("b", 1), copy("a", 1, received_ms=5), copy("a", 2), copy("a", 1, "view"), copy("b", 1)]
    kept, first_of = first_copies(events)
    # Same id at another time, or under another type, is another event (README): kept.
    assert kept == [0, 1, 3, 4]
    assert first_of == [0, 1, 0, 3, 4, 1]


def test_a_batch_without_copies_is_kept_whole() -> None:
    events = [copy(f"e{i}", i) for i in range(5)]
    assert first_copies(events) == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    assert first_copies([]) == ([], [])


def test_the_copy_received_first_is_kept_wherever_it_is_in_the_batch() -> None:
    # A replay's batch is in dead-letter id order, not receive order.
    events = [
        copy("a", 1, received_ms=9),
        copy("b", 1, received_ms=5),
        copy("a", 1, received_ms=3),
        copy("a", 1, received_ms=3),
    ]
    assert first_copies(events) == ([1, 2], [2, 1, 2, 2])
