"""Which copies of an event a batch writes: pure policy, no I/O (the Writer applies it)."""

from __future__ import annotations

from collections.abc import Sequence

from eventpipe.events import Event


def first_copies(events: Sequence[Event]) -> tuple[list[int], list[int]]:
    """The positions of the first copy of each event (by key: time, type, id) in `events`, in order,
    and for every position the position of its event's first copy: the one received first, the
    earlier in `events` when two were received in the same millisecond.

    Copies in one batch are written once: `events` would keep the last of copies received in the
    same millisecond (their versions tie) and the feed the first, so the two served different
    copies (39 of 40 such events in an attack). By receive time, not position: a replay's batch
    is in dead-letter id order."""
    if len({event.event_id for event in events}) == len(events):
        # No id twice, so no copies: the usual batch, at a fifth of the cost of the keys below.
        every = list(range(len(events)))
        return every, every.copy()
    keys = [(event.timestamp_ms, event.event_type, event.event_id) for event in events]
    first: dict[tuple[int, str, str], int] = {}
    for index, key in enumerate(keys):
        if key not in first or events[index].received_ms < events[first[key]].received_ms:
            first[key] = index
    return sorted(first.values()), [first[key] for key in keys]


class Tail:
    """The newest receive time one writer has stored, and the keys of the events it stored with it.

    A socket read's messages share one receive time, and a batch that fills up in the middle of one
    leaves the rest to the next, whose copies of those events would tie with the stored ones."""

    def __init__(self) -> None:
        self._ms = -1
        self._keys: set[tuple[int, str, str]] = set()

    def unstored(self, events: Sequence[Event], kept: list[int]) -> list[int]:
        """`kept` but events this writer stored a copy of, received in the same millisecond, in an earlier batch.

        Such copies' versions (first_copy) tie, and ReplacingMergeTree keeps the one stored last: /events,
        export and /events/{id} served the later copy, and the first copy's user no longer found the event,
        while the feed served the first (an attack: one event in a backlog drain per batch that filled up
        amid a group of copies; 198 of 200 with EVENTPIPE_BATCH_MAX_ROWS=1). Left out, the stored copy is
        the only one of that millisecond, the first received. Copies received by two workers in one
        millisecond still tie (docs/architecture.md, "Copies")."""
        tail_ms, tail = self._ms, self._keys  # the time first, inline: 1.4 ms a 20,000-row batch
        return [
            index
            for index in kept
            if events[index].received_ms != tail_ms
            or (events[index].timestamp_ms, events[index].event_type, events[index].event_id) not in tail
        ]

    def remember(self, stored: Sequence[Event]) -> None:
        """Keep the keys of the last events of `stored` (just committed, in arrival order) received in its
        last millisecond, for `unstored`: only they can meet copies in the next batch. A replay's batch, in
        letter order, leaves a trailing run at most, and an older one nothing."""
        newest = stored[-1].received_ms if stored else -1
        if newest < self._ms:
            return
        if newest > self._ms:
            self._ms, self._keys = newest, set()
        for event in reversed(stored):
            if event.received_ms != newest:
                break
            self._keys.add((event.timestamp_ms, event.event_type, event.event_id))
