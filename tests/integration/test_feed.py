"""The arrival feed serves every stored event exactly once to a client that follows it while several
writers commit at once: late events, old timestamps, redeliveries and re-sends included."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import clickhouse_connect
import pytest

from eventpipe.events import Event
from eventpipe.store.feed import Feed, FeedPage, Place
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer

DAY_MS = 86_400_000
Ident = tuple[int, str, str]


def ident(event: Event) -> Ident:
    return event.timestamp_ms, event.event_type, event.event_id


def stored(client: clickhouse_connect.driver.Client) -> set[Ident]:
    """Every event the store holds, as /events would list it (probes and worker marks left out)."""
    sql = "SELECT DISTINCT toUnixTimestamp64Milli(timestamp), event_type, event_id FROM events"
    rows = client.query(sql + " WHERE event_type != '_probe'").result_rows
    return {(int(t), str(kind), str(event_id)) for t, kind, event_id in rows}


def highest_block(client: clickhouse_connect.driver.Client) -> int:
    sql = "SELECT max(max_block_number) FROM system.parts WHERE database = currentDatabase() AND table = 'arrivals'"
    return int(client.command(sql + " AND active"))


class Follower:
    """A client of the feed: follows `next` for ever, as the docs tell a sync to."""

    def __init__(self, feed: Feed, limit: int, where: EventFilter | None = None) -> None:
        self.feed, self.limit, self.where = feed, limit, where or EventFilter()
        self.place = Place()
        self.served: list[Ident] = []
        self.pages: list[FeedPage] = []

    def poll(self) -> FeedPage:
        page = self.feed.page(self.where, self.limit, self.place)
        self.served += [ident(event) for event in page.rows]
        self.pages.append(page)
        self.place = page.next
        return page

    def catch_up(self, through_block: int) -> None:
        """Poll until an epoch that began after `through_block` was committed has been served whole."""
        while not (self.place.hi is None and self.place.lo >= through_block):
            self.poll()


def event(event_id: str, timestamp_ms: int, received_ms: int, kind: str = "click") -> Event:
    return Event(event_id, kind, timestamp_ms, received_ms, f"user-{event_id[-2:]}", f"events/{kind}", "{}")


def test_concurrent_writers_late_events_and_copies_are_served_exactly_once(
    client: clickhouse_connect.driver.Client,
) -> None:
    now = time.time_ns() // 1_000_000
    follower = Follower(Feed(Reader(client).run), limit=137)
    done = threading.Event()

    def follow() -> None:
        while not done.is_set():
            follower.poll()

    def write(worker: int) -> None:
        # One Writer per worker on the shared connection, as several workers commit into one server.
        writer, rng = Writer(client), random.Random(worker)
        mine: list[Event] = []
        for batch in range(40):
            received = now + batch * 10 + worker
            fresh = [
                # Late events too: a quarter are stamped up to 80 days before their receipt.
                event(f"w{worker}-{batch}-{i}", received - (rng.randrange(80 * DAY_MS) if i % 4 == 0 else i), received)
                for i in range(50)
            ]
            # Redeliveries of this worker's own events from any earlier batch (a crash, a broker
            # restart), and re-sends of events another worker stored (a producer retry).
            again = [copy._replace(received_ms=received) for copy in rng.sample(mine, min(len(mine), 10))]
            other = (worker + 1) % 4
            resent = [
                event(f"w{other}-{rng.randrange(batch + 1)}-{i}", received - i, received)
                for i in range(1, 50, 4)  # the undelayed ones, whose timestamp the test can know
            ]
            writer.insert_events([*fresh, *again, *resent])
            mine += fresh

    follower_thread = threading.Thread(target=follow)
    follower_thread.start()
    writers = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    follower_thread.join()
    follower.catch_up(highest_block(client))

    counts = Counter(follower.served)
    assert not [key for key, n in counts.items() if n > 1], "served twice"
    expected = stored(client)
    assert len(expected) >= 4 * 40 * 50
    assert set(counts) == expected, f"missed {len(expected - set(counts))}, extra {len(set(counts) - expected)}"
    # It was followed while the writers ran: several epochs, not one read at the end.
    assert len({page.next.lo for page in follower.pages}) > 3


def test_a_late_event_or_copy_committed_after_the_client_caught_up(client: clickhouse_connect.driver.Client) -> None:
    now = time.time_ns() // 1_000_000
    writer = Writer(client)
    follower = Follower(Feed(Reader(client).run), limit=1000)
    first = [event(f"a{i:02}", now - i, now) for i in range(20)]
    writer.insert_events(first)
    follower.catch_up(highest_block(client))
    assert sorted(follower.served) == sorted(map(ident, first))

    # A sync built on /events?since=<its last run> asks for timestamps after `now`: an event
    # stamped 60 days ago that arrives now is never in its window. The feed serves it, and
    # leaves out a redelivered copy of an event it served already.
    late = event("late", now - 60 * DAY_MS, now + 1000)
    writer.insert_events([late, first[3]._replace(received_ms=now + 1000)])
    follower.catch_up(highest_block(client))
    assert follower.served[20:] == [ident(late)]
    assert ident(late) not in {ident(row) for row in Reader(client).events(EventFilter(since_ms=now), 1000)}


def test_a_copy_received_first_but_committed_last_is_not_served_again(
    client: clickhouse_connect.driver.Client,
) -> None:
    # Worker A receives an event, worker B a re-send of it; B commits first, A's slower batch later.
    # /events keeps A's copy (received first); the feed served the event at B's commit and must
    # not serve it again at A's, whichever copy merges keep.
    now = time.time_ns() // 1_000_000
    writer = Writer(client)
    follower = Follower(Feed(Reader(client).run), limit=10)
    resend = event("e1", now - 5, now + 200)
    writer.insert_events([resend])
    follower.catch_up(highest_block(client))
    writer.insert_events([resend._replace(received_ms=now)])
    client.command("OPTIMIZE TABLE events FINAL")
    client.command("OPTIMIZE TABLE arrivals FINAL")
    follower.catch_up(highest_block(client))
    assert follower.served == [ident(resend)]
    kept = Reader(client).event("e1")
    assert kept is not None and kept.received_ms == now


def test_filtered_feed_and_byte_cap(client: clickhouse_connect.driver.Client) -> None:
    now = time.time_ns() // 1_000_000
    writer = Writer(client)
    rows = [event(f"b{i:03}", now - i, now, "purchase" if i % 3 == 0 else "click") for i in range(300)]
    # The 40 oldest (the feed's first in an epoch) carry 60 KB each.
    big = [r._replace(properties='{"blob": "' + "x" * 60_000 + '"}') for r in rows[-40:]]
    writer.insert_events(rows[:-40] + big)
    feed = Feed(Reader(client).run)

    purchases = Follower(feed, limit=7, where=EventFilter(event_type="purchase"))
    purchases.catch_up(highest_block(client))
    assert sorted(purchases.served) == sorted(ident(r) for r in rows if r.event_type == "purchase")

    # 40 events of 60 KB: a page stops at the byte cap, never before its first event.
    page = feed.page(EventFilter(), 40, Place(), max_bytes=200_000)
    assert 1 <= len(page.rows) <= 4 and page.next.after is not None
    assert len(feed.page(EventFilter(), 40, Place(), max_bytes=1).rows) == 1


@pytest.mark.parametrize("limit", [1, 1000])
def test_an_empty_store_answers_a_page_with_a_next(client: clickhouse_connect.driver.Client, limit: int) -> None:
    page = Feed(Reader(client).run).page(EventFilter(), limit, Place())
    assert page.rows == [] and page.next.hi is None and page.next.lo == 0
