"""Migration 16 makes events_by_user anew in finer granules while events keep arriving: no user's event is lost,
whether the migration runs through, dies at any step, or has writes between every two of its statements."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import clickhouse_connect
import pytest

from eventpipe.events import Event, Limits, parse
from eventpipe.store.migration import migrate
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.schema.index import EVENTS_BY_USER, EVENTS_BY_USER_FINE, USER_ROWS
from eventpipe.store.writer import Writer

RECEIVED_MS = 1_763_800_000_000
VIEW, OLD_VIEW = "events_by_user_feed_v3", "events_by_user_feed_v2"
SCRATCH, SCRATCH_FEED = "events_by_user_rebuild", "events_by_user_rebuild_feed"


class Events:
    """Numbered events of a few users, a third without one (events_by_user must not get those)."""

    def __init__(self) -> None:
        self._numbers = count()

    def next(self, how_many: int = 1) -> list[Event]:
        rows = []
        for _ in range(how_many):
            n = next(self._numbers)
            body: dict[str, Any] = {"event_id": f"e-{n}", "timestamp": RECEIVED_MS - n * 60_000}
            if n % 3:
                body["user_id"] = f"u{n % 4}"
            row = parse("events/click", json.dumps(body).encode(), RECEIVED_MS, Limits())
            assert isinstance(row, Event)
            rows.append(row)
        return rows


def at_version_15(client: clickhouse_connect.driver.Client) -> None:
    """events_by_user as migrations 6 and 11 left it: granules of 8,192 rows, fed by the view of migration 11."""
    client.command(f"DROP VIEW {VIEW}")
    client.command("DROP TABLE events_by_user SYNC")
    client.command(EVENTS_BY_USER)
    client.command(f"CREATE MATERIALIZED VIEW {OLD_VIEW} TO events_by_user AS {USER_ROWS}")
    client.command("ALTER TABLE schema_migrations DELETE WHERE version = 16", settings={"mutations_sync": 2})


def views_and_tables(client: clickhouse_connect.driver.Client) -> set[str]:
    return {row[0] for row in client.query("SHOW TABLES").result_rows}


def assert_every_user_event_is_indexed(client: clickhouse_connect.driver.Client, written: list[Event]) -> None:
    definition = client.command("SELECT engine_full FROM system.tables WHERE name = 'events_by_user'")
    assert "index_granularity = 1024" in definition
    names = views_and_tables(client)
    assert VIEW in names and not {OLD_VIEW, SCRATCH, SCRATCH_FEED} & names
    reader = Reader(client)
    for user in ("u1", "u2", "u3"):
        expected = sorted(e.event_id for e in written if e.user_id == user)
        assert sorted(e.event_id for e in reader.events(EventFilter(None, user), 1000)) == expected, user
    users = sum(1 for e in written if e.user_id is not None)
    assert client.command("SELECT count() FROM events_by_user FINAL") == users
    assert client.command("SELECT count() FROM events_by_user WHERE user_id = ''") == 0


@pytest.mark.parametrize("crash", ["none", "while copying", "after the swap", "after the new view"])
def test_migration_16_refills_the_user_index_and_a_rerun_after_a_crash_at_any_step_finishes_it(
    client: clickhouse_connect.driver.Client, crash: str
) -> None:
    at_version_15(client)
    writer, events = Writer(client), Events()
    written = events.next(60)
    writer.insert_events(written)
    if crash != "none":  # the steps of migration._refill up to where it died
        client.command(EVENTS_BY_USER_FINE.format(table=SCRATCH))
        client.command(f"CREATE MATERIALIZED VIEW {SCRATCH_FEED} TO {SCRATCH} AS {USER_ROWS}")
        if crash == "while copying":
            client.command(f"INSERT INTO {SCRATCH} {USER_ROWS} LIMIT 5")
        else:
            client.command(f"INSERT INTO {SCRATCH} {USER_ROWS}")
            client.command(f"EXCHANGE TABLES events_by_user AND {SCRATCH}")
        if crash == "after the new view":
            client.command(f"CREATE MATERIALIZED VIEW {VIEW} TO events_by_user AS {USER_ROWS}")
        # The worker went on meanwhile.
        later = events.next(30)
        writer.insert_events(later)
        written += later
    swapped = crash in ("after the swap", "after the new view")
    uuid = "SELECT uuid FROM system.tables WHERE database = currentDatabase() AND name = 'events_by_user'"
    table = client.command(uuid)

    assert migrate(client) == [16]
    if swapped:  # the new table is kept, not copied once more: a copy of 100M events takes minutes
        assert client.command(uuid) == table
    assert migrate(client) == []
    after = events.next(30)
    writer.insert_events(after)
    assert_every_user_event_is_indexed(client, written + after)


class WritingBetweenStatements:
    """A client that has the worker store a few events before each statement the migration runs."""

    def __init__(self, client: clickhouse_connect.driver.Client, writer: Writer, events: Events) -> None:
        self._client, self._writer, self._events = client, writer, events
        self.written: list[Event] = []

    def command(self, *args: Any, **kwargs: Any) -> Any:
        rows = self._events.next(3)
        self._writer.insert_events(rows)
        self.written += rows
        return self._client.command(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_migration_16_keeps_the_events_stored_between_any_two_of_its_statements(
    client: clickhouse_connect.driver.Client,
) -> None:
    at_version_15(client)
    writer, events = Writer(client), Events()
    before = events.next(60)
    writer.insert_events(before)
    interleaved = WritingBetweenStatements(client, writer, events)
    assert migrate(interleaved) == [16]  # type: ignore[arg-type]
    assert len(interleaved.written) >= 3 * 8, "the migration ran fewer statements than it has"
    assert_every_user_event_is_indexed(client, before + interleaved.written)
