"""The events `eventpipe bench fill` makes up."""

from __future__ import annotations

from collections import defaultdict

from eventpipe.bench.fill import USERS, batches


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
