"""Pages of events read the newest day, then month, then everything: the same pages as one query over all."""

from __future__ import annotations

import itertools
import json
import random
import time

import clickhouse_connect
import pytest

from eventpipe.errors import CostlyQueryError
from eventpipe.events import Event, Limits, parse
from eventpipe.store.page import Position
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer

DAY_MS = 86_400_000


def event(event_id: str, at_ms: int, kind: str, now_ms: int) -> Event:
    body = {"event_id": event_id, "timestamp": at_ms, "user_id": f"u{int(event_id[1:]) % 3}"}
    row = parse(f"events/{kind}", json.dumps(body).encode(), now_ms, Limits())
    assert isinstance(row, Event)
    return row


def walk(reader: Reader, where: EventFilter, limit: int) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    after: Position | None = None
    while True:
        page = reader.event_page(where, limit, after)
        seen += [(row.timestamp_ms, row.event_id) for row in page.rows]
        if page.next is None:
            return seen
        after = page.next


def test_pages_walk_events_spread_over_decades_newest_first_each_once(client: clickhouse_connect.driver.Client) -> None:
    now = time.time_ns() // 1_000_000
    rng = random.Random(5)
    # Dense recent traffic, a sparse type whose events are years old, and a few an hour in the future.
    times = [now - rng.randrange(3 * DAY_MS) for _ in range(300)]
    times += [now - rng.randrange(25 * 365 * DAY_MS) for _ in range(150)]
    times += [now + rng.randrange(3_600_000) for _ in range(5)]
    rows = [event(f"e{i}", at, "rare" if i % 9 == 0 else "click", now) for i, at in enumerate(times)]
    Writer(client).insert_events(rows)
    reader = Reader(client)
    for where in (
        EventFilter(),
        EventFilter("rare"),
        EventFilter(None, "u1"),
        EventFilter(None, None, now - 400 * DAY_MS, now - 2 * DAY_MS),
    ):
        expected = sorted(
            (
                (e.timestamp_ms, e.event_id)
                for e in rows
                if (where.event_type is None or e.event_type == where.event_type)
                and (where.user_id is None or e.user_id == where.user_id)
                and (where.since_ms is None or e.timestamp_ms >= where.since_ms)
                and (where.until_ms is None or e.timestamp_ms < where.until_ms)
            ),
            reverse=True,
        )
        for limit in (5, 100, 1_000):
            assert walk(reader, where, limit) == expected, (where, limit)


def test_an_id_reused_under_several_types_at_one_time_is_walked_whole_at_every_page_size(
    client: clickhouse_connect.driver.Client,
) -> None:
    # An id reused under two types is two events; with one timestamp too they tie on (time, id),
    # and a page that ended between them used to skip the rest (found by an attack on the API).
    now = time.time_ns() // 1_000_000
    at = now - DAY_MS // 2
    rows = [event("e3", at, kind, now) for kind in ("dupa", "dupb", "dupc")]
    rows += [event(f"e{i}", at + (i - 5), "click", now) for i in range(10) if i != 3]  # around them, same user
    rows += [event("e11", at, "dupb", now), event("e12", at, "dupb", now)]  # and other ids of one type, as well
    Writer(client).insert_events(rows)
    reader = Reader(client)
    for where in (
        EventFilter(),
        EventFilter(None, "u0"),
        EventFilter(None, None, at, at + 1),
    ):
        expected = sorted(
            (
                (e.timestamp_ms, e.event_type, e.event_id)
                for e in rows
                if (where.user_id is None or e.user_id == where.user_id)
                and (where.since_ms is None or where.since_ms <= e.timestamp_ms < (where.until_ms or 0))
            ),
            reverse=True,
        )
        for limit in (1, 2, 3, 100):
            seen = []
            after: Position | None = None
            while True:
                page = reader.event_page(where, limit, after)
                seen += [(row.timestamp_ms, row.event_type, row.event_id) for row in page.rows]
                if page.next is None:
                    break
                after = page.next
            assert seen == expected, (where, limit)


def test_a_page_of_several_windows_keeps_within_one_time_bound(
    client: clickhouse_connect.driver.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A filter that fills no window has the page try the day, the month and everything: each query with a
    # bound of its own, one page ran 18 s under a 10 s bound. A clock that moves 4 s at each look stands in
    # for three slow queries; the third finds nothing left of the bound and is not run.
    now = time.time_ns() // 1_000_000
    Writer(client).insert_events([event(f"e{i}", now - i * DAY_MS, "click", now) for i in range(60)])
    reader = Reader(client, timeout_s=10)
    clock = itertools.count(0, 4)
    monkeypatch.setattr("eventpipe.store.bound.monotonic", lambda: float(next(clock)))
    with pytest.raises(CostlyQueryError, match="its 10 s bound"):
        reader.event_page(EventFilter("nothing-of-this-type"), 100)
    # The bound taken at 0, two windows read at 4 and 8 s, the third refused at 12: none run past 10 s.
    assert next(clock) == 16
    # Within the bound, all three windows are read and the page is whole.
    monkeypatch.setattr("eventpipe.store.bound.monotonic", lambda: 0.0)
    assert len(reader.event_page(EventFilter("click"), 100).rows) == 60
