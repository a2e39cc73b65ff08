"""No duplicate visible at 10M stored events: redeliveries and re-sends, dated and undated, in every read."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest

from eventpipe.events import Event, Limits, parse
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer
from tests.support import bulk
from tests.support.services import chdb_database_dsn

STORED = 10_000_000
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def store(chdb_root: Path) -> Iterator[clickhouse_connect.driver.Client]:
    # Its own database in the session's embedded engine, filled once by the engine itself (about a minute;
    # the Writer takes half as long again, building the rows in Python): the copies below go through the Writer.
    client = connect(chdb_database_dsn(chdb_root))
    migrate(client)
    bulk.fill(client, STORED, time.time_ns() // 1_000_000)
    yield client
    # Dropped, so its merges stop: the session's engine goes on serving this process's later tests,
    # some of which measure the process's own memory.
    client.command(f"DROP DATABASE IF EXISTS {client.database} SYNC")  # t_<hex>, of chdb_database_dsn


def undated(event_id: str, received_ms: int) -> Event:
    """An event with an id but no timestamp: each delivery is stamped with its own receive time."""
    body = {"event_id": event_id, "user_id": "user-undated", "page": "/cart"}
    row = parse("events/checkout", json.dumps(body).encode(), received_ms, Limits())
    assert isinstance(row, Event)
    return row


def test_copies_never_show_at_ten_million_events(store: clickhouse_connect.driver.Client) -> None:
    reader, writer = Reader(store), Writer(store)
    now = time.time_ns() // 1_000_000
    assert reader.count_events() == STORED

    # Redeliveries and producer re-sends of stored events: same payload, a later receive time,
    # spread over the whole 90 days and written in their own batches, as a worker would.
    month = EventFilter(None, None, now - 30 * 24 * HOUR_MS, now - 2 * HOUR_MS)
    stored = reader.events(month, 1000)
    writer.insert_events([row._replace(received_ms=now) for row in stored])
    writer.insert_events([row._replace(received_ms=now + 5) for row in stored[:300]])

    # Events without a timestamp: first copies, then a redelivery an hour later in another batch,
    # and a re-send inside one batch with the first copy.
    firsts = [undated(f"undated-{i}", now - HOUR_MS + i) for i in range(400)]
    writer.insert_events(firsts)
    writer.insert_events([undated(f"undated-{i}", now + i) for i in range(400)])
    pair = [undated("undated-pair", now + 1), undated("undated-pair", now + 9)]
    writer.insert_events(pair)

    assert reader.count_events() == STORED + 401
    types = dict(reader.event_types(EventFilter()).items)
    assert sum(types.values()) == STORED + 401
    assert types["checkout"] == 401

    # Pages over the windows that hold the copies, by time, by type and by user.
    walked = reader.events(month, 1000)
    assert [row.event_id for row in walked] == [row.event_id for row in stored]
    undated_page = reader.events(EventFilter("checkout"), 1000)
    assert len(undated_page) == 401 == len({row.event_id for row in undated_page})
    by_user = reader.events(EventFilter(None, "user-undated"), 1000)
    assert len(by_user) == 401 == len({row.event_id for row in by_user})
    assert {row.timestamp_ms for row in by_user if row.event_id != "undated-pair"} == {e.timestamp_ms for e in firsts}
    user = stored[0].user_id
    assert user is not None
    of_user = reader.events(EventFilter(None, user), 1000)
    assert len(of_user) == len({row.event_id for row in of_user})

    # Statistics over the copies' windows count each event once.
    hour_counts = dict(reader.timeseries(EventFilter("checkout", None, now - 2 * HOUR_MS, now + HOUR_MS), HOUR_MS))
    assert sum(hour_counts.values()) == 401
    first = reader.event("undated-0")
    assert first is not None and first.timestamp_ms == firsts[0].timestamp_ms, "the first copy's time"
