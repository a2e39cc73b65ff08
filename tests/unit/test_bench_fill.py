"""The events `eventpipe bench fill` makes up."""

from __future__ import annotations

from collections import defaultdict

from eventpipe.bench.fill import SPAN_MS, USER_STRIDE, USERS, batches, templates


def test_a_users_events_are_not_copies_of_one_template() -> None:
    """100,000 users is a multiple of the 5,000 templates: every event of a user was the same event
    (type, properties) again, which no shop's user does."""
    seen: defaultdict[object, set[object]] = defaultdict(set)
    for columns in batches(3 * USERS, 1_800_000_000_000):
        _ids, types, _times, _received, users, _topics, properties = columns
        for user, event_type, props in zip(users, types, properties, strict=True):
            seen[user].add((event_type, props))
    assert len(seen) == USERS
    assert all(len(events) > 1 for events in seen.values()), "a user's three events were one event thrice"


def test_every_row_follows_the_rule_across_batches_rounds_of_users_and_id_blocks() -> None:
    """The batches are built from slices, not row by row: a slice off by one at a batch's edge, a round
    of users or a block of 65,536 ids would shift every row after it (a user's events, their times).
    Every row of batches crossing each of those edges is checked against the rule written row by row."""
    now_ms, count = 1_800_000_000_000, 2 * USERS + 70_000
    rows = templates(now_ms)
    made = [list(zip(*columns, strict=True)) for columns in batches(count, now_ms, batch=65_000)]
    assert [len(batch) for batch in made] == [65_000] * 4 + [10_000]
    flat = [row for batch in made for row in batch]
    tail = flat[0][0][len("00000000-0000") :]
    for index in range(count):
        base = rows[(index + index // USERS) % len(rows)]
        moment = now_ms - SPAN_MS + index * SPAN_MS // count
        expected = (
            f"{index >> 16:08x}-{index & 0xFFFF:04x}{tail}",
            base.event_type,
            moment,
            moment + 150,
            f"user-{index * USER_STRIDE % USERS:05d}",
            base.topic,
            base.properties,
        )
        assert flat[index] == expected, index
    assert len({row[0] for row in flat}) == count
