"""Counts through the tally against the real engine: every answer equals the plain FINAL query's, whatever changed."""

from __future__ import annotations

import json

import clickhouse_connect

from eventpipe.events import Event, Limits, parse
from eventpipe.store.query import EventFilter, Query, count_query, event_types_query, timeseries_query
from eventpipe.store.reader import Reader
from eventpipe.store.rollup import Rollup
from eventpipe.store.writer import Writer

NOW_MS = 1_763_800_000_000
DAY_MS = 86_400_000


def event(event_id: str, at_ms: int, kind: str = "click") -> Event:
    body = {"event_id": event_id, "timestamp": at_ms, "user_id": "u1"}
    row = parse(f"events/{kind}", json.dumps(body).encode(), NOW_MS, Limits())
    assert isinstance(row, Event)
    return row


def assert_as_final(reader: Reader, expected_total: int) -> None:
    """The tallied answers equal the plain FINAL queries, and the expected total."""
    types = sorted(
        ((str(k), int(str(n))) for k, n in reader.run(event_types_query(EventFilter()))), key=lambda i: (-i[1], i[0])
    )
    assert reader.event_types(EventFilter()).items == types
    assert reader.count_events() == int(str(reader.run(count_query())[0][0])) == expected_total


def test_all_time_counts_stay_exact_as_inserts_copies_merges_and_deletes_change_counted_days(
    client: clickhouse_connect.driver.Client,
) -> None:
    reader, writer = Reader(client), Writer(client)
    old = [event(f"e{i}", NOW_MS - (i % 3) * DAY_MS - 40 * DAY_MS) for i in range(300)]
    writer.insert_events(old)
    assert_as_final(reader, 300)
    assert_as_final(reader, 300)  # the days are kept now; the answer is the same

    writer.insert_events(old[:50])  # a redelivery into days already counted
    assert_as_final(reader, 300)
    writer.insert_events([event("late", old[0].timestamp_ms + 1, "purchase")])  # a late event on a counted day
    assert_as_final(reader, 301)
    client.command("OPTIMIZE TABLE events FINAL")  # the parts of those days merge into one
    assert_as_final(reader, 301)
    writer.insert_events([event("2001", 978_307_200_000, "signup")])  # a day never seen
    assert_as_final(reader, 302)
    client.command("ALTER TABLE events DELETE WHERE event_id = 'late'", settings={"mutations_sync": 2})
    assert_as_final(reader, 301)


def test_all_time_counts_stay_exact_when_the_newest_days_are_counted_by_hour(
    client: clickhouse_connect.driver.Client,
) -> None:
    # The newest two days are counted by hour (a day that takes rows all day long was counted whole at every
    # call): hours and days must add up to the plain FINAL count through inserts, copies, merges and a day ahead.
    reader, writer = Reader(client), Writer(client)
    spread = [event(f"h{i}", NOW_MS - i * 600_000, ("click", "view")[i % 2]) for i in range(400)]  # 2.8 days
    writer.insert_events(spread)
    assert_as_final(reader, 400)
    writer.insert_events([event("now", NOW_MS + 1)])  # the current hour, as a stream adds to it
    assert_as_final(reader, 401)
    writer.insert_events(spread[::7])  # copies into hours and days already counted
    assert_as_final(reader, 401)
    writer.insert_events([event("ahead", NOW_MS + 20 * 3_600_000, "purchase")])  # tomorrow: the hot days move
    assert_as_final(reader, 402)
    client.command("OPTIMIZE TABLE events FINAL")
    assert_as_final(reader, 402)
    client.command("ALTER TABLE events DELETE WHERE event_id = 'ahead'", settings={"mutations_sync": 2})
    assert_as_final(reader, 401)

    # Today and yesterday by hour, by the clock, while a producer's events dated ten days ahead stay by day.
    rollup = Rollup(reader.run, now_ms=lambda: NOW_MS)
    far = parse(
        "events/trial",
        json.dumps({"event_id": "far", "timestamp": NOW_MS + 10 * DAY_MS}).encode(),
        NOW_MS,
        Limits(max_future_skew_ms=30 * DAY_MS),
    )
    assert isinstance(far, Event)
    for batch in ([far], [event("later", NOW_MS + 2)], [event("tomorrow", NOW_MS + DAY_MS - 1000)], [far]):
        writer.insert_events(batch)
        plain = {str(k): int(str(n)) for k, n in reader.run(event_types_query(EventFilter()))}
        assert rollup.event_types(EventFilter()) == plain
    assert plain == {"click": 203, "view": 200, "trial": 1}


def test_a_reader_that_kept_days_agrees_with_a_new_one_after_another_process_wrote(
    client: clickhouse_connect.driver.Client,
) -> None:
    kept, writer = Reader(client), Writer(client)
    writer.insert_events([event(f"a{i}", NOW_MS - i * 3_600_000) for i in range(100)])
    assert kept.count_events() == 100
    writer.insert_events([event(f"b{i}", NOW_MS - i * 7_200_000, "view") for i in range(100)])
    writer.insert_events([event(f"a{i}", NOW_MS - i * 3_600_000) for i in range(0, 100, 2)])
    fresh = Reader(client)
    assert (
        kept.event_types(EventFilter()).items
        == fresh.event_types(EventFilter()).items
        == [("click", 100), ("view", 100)]
    )
    assert kept.count_events() == fresh.count_events() == 200


HOUR_MS = 3_600_000
WINDOWS = [
    (NOW_MS - DAY_MS, None),  # the last 24 hours, as the API's default
    (NOW_MS - DAY_MS - 1_234_567, NOW_MS - 7_654_321),  # ragged at both ends
    (NOW_MS // HOUR_MS * HOUR_MS - 5 * HOUR_MS, NOW_MS // HOUR_MS * HOUR_MS),  # whole hours only
    (NOW_MS - 1_000, NOW_MS + 1_000),  # inside one hour
    (NOW_MS - 40 * DAY_MS, NOW_MS),  # wider than the tally's month of hours
]


def assert_windows_as_final(reader: Reader) -> None:
    for since, until in WINDOWS:
        for kind in (None, "view"):
            where = EventFilter(kind, None, since, until)
            plain = [(str(k), int(str(n))) for k, n in reader.run(event_types_query(where))]
            assert reader.event_types(where).items == sorted(plain, key=lambda i: (-i[1], i[0])), (since, until, kind)
            for step in (HOUR_MS, 6 * HOUR_MS, DAY_MS, 60_000):
                plain_series = [(int(str(b)), int(str(n))) for b, n in reader.run(timeseries_query(where, step))]
                assert reader.timeseries(where, step) == plain_series, (since, until, kind, step)


def test_windowed_statistics_stay_exact_as_the_hours_they_keep_change(client: clickhouse_connect.driver.Client) -> None:
    reader, writer = Reader(client), Writer(client)
    spread = [event(f"s{i}", NOW_MS - i * 97_000, "view" if i % 3 else "click") for i in range(1_000)]
    writer.insert_events(spread[:600])
    writer.insert_events(spread[600:])
    assert_windows_as_final(reader)
    assert_windows_as_final(reader)  # from kept hours now
    writer.insert_events(spread[100:300])  # redeliveries into kept hours
    writer.insert_events([event("late", NOW_MS - 3 * HOUR_MS - 5, "view")])  # a late event in a kept hour
    assert_windows_as_final(reader)
    client.command("OPTIMIZE TABLE events FINAL")
    assert_windows_as_final(reader)
    client.command("ALTER TABLE events DELETE WHERE event_id = 'late'", settings={"mutations_sync": 2})
    assert_windows_as_final(reader)


def test_windows_wider_than_a_month_or_stretched_by_an_event_ahead_of_now_keep_a_month_on_the_tally(
    client: clickhouse_connect.driver.Client,
) -> None:
    reader, writer = Reader(client), Writer(client)
    writer.insert_events([event(f"m{i}", NOW_MS - i * 7 * HOUR_MS, "view" if i % 2 else "click") for i in range(300)])
    # The worker accepts a timestamp up to a day ahead of its receipt.
    writer.insert_events([event("ahead", NOW_MS + 23 * HOUR_MS, "purchase")])
    rollup = Rollup(reader.run)
    for days, until in ((31, None), (60, None), (60, NOW_MS)):  # a month of kept hours, the rest live
        where = EventFilter(None, None, NOW_MS - days * DAY_MS, until)
        plain = dict((str(k), int(str(n))) for k, n in reader.run(event_types_query(where)))
        assert rollup.event_types(where) == plain
        assert plain.get("purchase", 0) == (until is None)
        series = [(int(str(b)), int(str(n))) for b, n in reader.run(timeseries_query(where, DAY_MS))]
        assert sorted((rollup.timeseries(where, DAY_MS) or {}).items()) == series


def test_a_count_of_more_types_than_the_tally_keeps_fetches_no_more_and_leaves_it_to_the_plain_query(
    client: clickhouse_connect.driver.Client,
) -> None:
    # A producer chooses how many types there are: each call fetched every (bucket, type) pair there was to
    # count, however many, to list one type (found by a review). Past the bound, and for a while after, the
    # plain query answers, which fetches only the types it lists.
    reader, writer = Reader(client), Writer(client)
    writer.insert_events([event(f"t{i}", NOW_MS - (i % 2) * HOUR_MS - 30 * 60_000, f"type{i}") for i in range(30)])
    fetched: list[int] = []

    def run(query: Query) -> list[tuple[object, ...]]:
        rows = reader.run(query)
        fetched.append(len(rows))
        return rows

    all_time, ragged = EventFilter(), EventFilter(None, None, NOW_MS - 3 * HOUR_MS - 1, None)
    small = Rollup(run, now_ms=lambda: NOW_MS, max_rows=20)
    assert small.event_types(all_time) is None
    assert max(fetched) == 21, fetched
    asked = len(fetched)
    assert small.event_types(all_time) is None
    assert len(fetched) == asked, "paused: nothing fetched again to be dropped"
    # All time paused leaves windows to the tally: the last 40 minutes hold 15 types.
    recent = EventFilter(None, None, NOW_MS - 40 * 60_000, None)
    assert small.event_types(recent) == {f"type{i}": 1 for i in range(0, 30, 2)}
    assert small.event_types(ragged) is None  # a window: its hours hold 30 (hour, type) pairs
    asked = len(fetched)
    assert small.timeseries(ragged, HOUR_MS) is None and small.event_types(recent) is None
    assert len(fetched) == asked, "windows paused in turn"
    roomy = Rollup(run, now_ms=lambda: NOW_MS, max_rows=60)
    plain = {str(k): int(str(n)) for k, n in reader.run(event_types_query(all_time))}
    assert roomy.event_types(all_time) == plain and len(plain) == 30
