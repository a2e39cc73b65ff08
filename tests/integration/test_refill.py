"""Migration 16 makes events_by_user anew in finer granules while events keep arriving: no user's event is lost,
whether the migration runs through, dies at any step, or has writes between every two of its statements."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import clickhouse_connect
import pytest

from eventpipe.errors import HaltStorageError, RetryableStorageError
from eventpipe.events import Event, Limits, parse
from eventpipe.store.erasure import Eraser
from eventpipe.store.migration import migrate
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.schema.index import EVENTS_BY_USER, EVENTS_BY_USER_FINE, USER_ROWS
from eventpipe.store.swap import LAST_BLOCK
from eventpipe.store.writer import Writer

RECEIVED_MS = 1_763_800_000_000
VIEW, OLD_VIEW = "events_by_user_feed_v3", "events_by_user_feed_v2"
SCRATCH, SCRATCH_FEED = "events_by_user_refill", "events_by_user_refill_feed"


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


def stored_at_version_15(client: clickhouse_connect.driver.Client) -> tuple[Writer, Events, list[Event]]:
    """A store as migration 15 left it, holding 60 events; the writer and the events to go on with."""
    at_version_15(client)
    writer, events = Writer(client), Events()
    written = events.next(60)
    writer.insert_events(written)
    return writer, events, written


def engine(client: clickhouse_connect.driver.Client) -> str:
    sql = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events_by_user'"
    return str(client.command(sql))


def views_and_tables(client: clickhouse_connect.driver.Client) -> set[str]:
    return {row[0] for row in client.query("SHOW TABLES").result_rows}


def assert_every_user_event_is_indexed(client: clickhouse_connect.driver.Client, written: list[Event]) -> None:
    assert "index_granularity = 1024" in engine(client)
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
    writer, events, written = stored_at_version_15(client)
    block = client.command(LAST_BLOCK, parameters={"t": "events"})
    if crash != "none":  # the steps of swap.refill_table up to where it died
        client.command(EVENTS_BY_USER_FINE.format(table=SCRATCH) + f" COMMENT 'filled from events after block {block}'")
        client.command(f"CREATE MATERIALIZED VIEW {SCRATCH_FEED} TO {SCRATCH} AS {USER_ROWS}")
        if crash == "while copying":
            client.command(f"INSERT INTO {SCRATCH} {USER_ROWS} LIMIT 5")
        else:
            client.command(f"INSERT INTO {SCRATCH} {USER_ROWS}")
            client.command(f"EXCHANGE TABLES events_by_user AND {SCRATCH}")
        if crash == "after the new view":
            client.command(f"CREATE MATERIALIZED VIEW {VIEW} TO events_by_user AS {USER_ROWS}")
        # The worker went on meanwhile, and an insert in flight when the feed was
        # made, committed after the copy read events, reached neither view.
        later = events.next(30)
        writer.insert_events(later)
        written += later
        in_flight = events.next(6)
        targets = {VIEW: "events_by_user", OLD_VIEW: "events_by_user", SCRATCH_FEED: SCRATCH}
        present = [view for view in targets if view in views_and_tables(client)]
        for view in present:
            client.command(f"DROP VIEW {view}")
        writer.insert_events(in_flight)
        for view in present:
            client.command(f"CREATE MATERIALIZED VIEW {view} TO {targets[view]} AS {USER_ROWS}")
        written += in_flight
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
        self.statements: list[str] = []

    def command(self, *args: Any, **kwargs: Any) -> Any:
        rows = self._events.next(3)
        self._writer.insert_events(rows)
        self.written += rows
        self.statements.append(str(args[0]))
        return self._client.command(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_migration_16_keeps_the_events_stored_between_any_two_of_its_statements(
    client: clickhouse_connect.driver.Client,
) -> None:
    writer, events, before = stored_at_version_15(client)
    interleaved = WritingBetweenStatements(client, writer, events)
    assert migrate(interleaved, retention_days=3650) == [16]  # type: ignore[arg-type]
    assert any(statement.startswith("EXCHANGE") for statement in interleaved.statements), "it copied and swapped"
    assert_every_user_event_is_indexed(client, before + interleaved.written)
    # The copy was made with the retention already set: no second rewrite after it.
    assert "TTL toDateTime(timestamp) + toIntervalDay(3651)" in client.command(
        "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'events_by_user'"
    )
    assert not any("MODIFY TTL" in statement for statement in interleaved.statements if "events_by_user " in statement)


class CopyLost(WritingBetweenStatements):
    """As if a second migrator dropped this one's copy and began its own, right after the copy was made."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        done = super().command(*args, **kwargs)
        if str(args[0]).startswith(f"INSERT INTO {SCRATCH} "):
            self._client.command(f"DROP VIEW {SCRATCH_FEED}")
            self._client.command(f"DROP TABLE {SCRATCH} SYNC")
            self._client.command(EVENTS_BY_USER_FINE.format(table=SCRATCH))
            self._client.command(f"CREATE MATERIALIZED VIEW {SCRATCH_FEED} TO {SCRATCH} AS {USER_ROWS}")
        return done


def test_migration_16_halts_rather_than_swap_in_a_copy_another_migrator_emptied(
    client: clickhouse_connect.driver.Client,
) -> None:
    writer, events, before = stored_at_version_15(client)
    racing = CopyLost(client, writer, events)
    with pytest.raises(HaltStorageError, match="another migrator"):
        migrate(racing)  # type: ignore[arg-type]
    assert "index_granularity = 8192" in engine(client), "the old table still serves"
    assert migrate(client) == [16]
    assert_every_user_event_is_indexed(client, before + racing.written)


def test_an_erasure_waits_for_the_copy_and_is_told_to_run_again_if_a_table_was_swapped_under_it(
    client: clickhouse_connect.driver.Client,
) -> None:
    # The copy reads events as they were when it began: a user's rows deleted
    # meanwhile would come back with the swap, and the erasure would say done.
    written = stored_at_version_15(client)[2]
    client.command(EVENTS_BY_USER_FINE.format(table=SCRATCH))
    with pytest.raises(RetryableStorageError, match="copying events_by_user_refill"):
        Eraser(client).erase("u1")
    client.command(f"DROP TABLE {SCRATCH}")
    assert client.command("SELECT count() FROM events WHERE user_id = 'u1'") > 0, "refused before deleting anything"

    class MigratingMidway:
        """The migration runs, whole, as the erasure's first delete is sent."""

        def __init__(self) -> None:
            self.migrated: list[int] | None = None

        def command(self, *args: Any, **kwargs: Any) -> Any:
            if self.migrated is None and str(args[0]).startswith("DELETE"):
                self.migrated = migrate(client)
            return client.command(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

    midway = MigratingMidway()
    with pytest.raises(RetryableStorageError, match="erase again"):
        Eraser(midway).erase("u1")  # type: ignore[arg-type]
    assert midway.migrated == [16]
    Eraser(client).erase("u1")
    assert Reader(client).events(EventFilter(None, "u1"), 100) == []
    assert client.command("SELECT count() FROM events_by_user FINAL WHERE user_id = 'u1'") == 0
    assert_every_user_event_is_indexed(client, [e for e in written if e.user_id != "u1"])
