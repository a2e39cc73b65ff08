"""Copies of an event are written once, the first received (store.copy): within one batch, and across two."""

from __future__ import annotations

from eventpipe.events import Event
from eventpipe.store.copy import Tail, first_copies


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


def test_copies_of_the_last_millisecond_stored_are_left_out_of_the_next_batch() -> None:
    # A socket read's messages share a receive time; a batch that filled up amid them left the rest,
    # copies included, to the next batch, where they would tie with the stored copy.
    tail = Tail()
    tail.remember([copy("a", 1, received_ms=7), copy("b", 1, received_ms=9), copy("c", 1, received_ms=9)])
    following = [copy("b", 1, received_ms=9), copy("a", 1, received_ms=7), copy("d", 1, received_ms=9)]
    # "a" was stored in an older millisecond: its copy is a later receipt, whose version is newer.
    assert tail.unstored(following, [0, 1, 2]) == [1, 2]


def test_a_copy_received_in_a_later_millisecond_is_kept() -> None:
    tail = Tail()
    tail.remember([copy("b", 1, received_ms=9)])
    assert tail.unstored([copy("b", 1, received_ms=10)], [0]) == [0]
    # Another event with the same id at another time, or of another type, is no copy.
    assert tail.unstored([copy("b", 2, received_ms=9), copy("b", 1, "view", received_ms=9)], [0, 1]) == [0, 1]


def test_only_the_newest_millisecond_is_remembered() -> None:
    tail = Tail()
    tail.remember([copy("a", 1, received_ms=9)])
    # A replay's older batch leaves the tail as it was.
    tail.remember([copy("old", 1, received_ms=3)])
    assert tail.unstored([copy("a", 1, received_ms=9), copy("old", 1, received_ms=3)], [0, 1]) == [1]
    # A newer batch replaces it; its keys of the same millisecond add up over batches.
    tail.remember([copy("x", 1, received_ms=5), copy("b", 1, received_ms=12)])
    tail.remember([copy("c", 1, received_ms=12)])
    again = [copy("a", 1, received_ms=9), copy("b", 1, received_ms=12), copy("c", 1, received_ms=12)]
    assert tail.unstored(again, [0, 1, 2]) == [0]
    tail.remember([])
    assert tail.unstored(again, [0, 1, 2]) == [0]
