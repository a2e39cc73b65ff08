"""The store against the real ClickHouse engine (chDB): migrations, writer, dedup, isolation of bad rows."""

from __future__ import annotations

import json
import time

import clickhouse_connect
import pytest

from eventpipe.errors import HaltStorageError, StorageError
from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.store import query as query_module
from eventpipe.store.audit import Audit
from eventpipe.store.client import connect
from eventpipe.store.migration import LEDGER, MIGRATIONS, migrate
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.schema.index import BY_USER_ROWS
from eventpipe.store.schema.record import COMPLETE
from eventpipe.store.writer import EVENT_COLUMNS, Writer
from tests.support.wait import wait_until

RECEIVED_MS = 1_763_800_000_000


def sample(count: int, prefix: str = "e") -> list[Event]:
    rows = []
    for i in range(count):
        body = {"event_id": f"{prefix}-{i}", "timestamp": RECEIVED_MS - i, "user_id": f"u{i % 7}", "n": i}
        row = parse("events/click", json.dumps(body).encode(), RECEIVED_MS, Limits())
        assert isinstance(row, Event)
        rows.append(row)
    return rows


def test_an_event_accepted_just_inside_the_retention_outlives_the_next_merge(
    client: clickhouse_connect.driver.Client,
) -> None:
    # The worker takes events up to EVENTPIPE_RETENTION_DAYS old, and the TTL dropped them at that same
    # age: one 2 s inside it was acknowledged, counted stored, and gone at the merge seconds later,
    # before a caught-up /feed sync asked again (found by an attack on time).
    migrate(client, retention_days=1)
    now = int(time.time() * 1000)
    edge = parse(
        "events/x", json.dumps({"event_id": "edge", "timestamp": now - 86_400_000 + 2_000}).encode(), now, Limits()
    )
    assert isinstance(edge, Event)
    assert Writer(client).insert_events([edge]) == []
    time.sleep(3)
    for table in ("events", "arrivals"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert Reader(client).count_events() == 1
    assert int(client.command("SELECT count() FROM arrivals")) == 1


DEFINITIONS = (
    "SELECT name, metadata_modification_time FROM system.tables WHERE database = currentDatabase() ORDER BY name"
)


def test_migrations_are_applied_once_and_in_order(clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    assert migrate(client) == [m.version for m in MIGRATIONS]
    assert migrate(client) == []
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert {"events", "dead_letters", "schema_migrations"} <= tables


SYNCED_TABLES = (
    "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree%' AND NOT"
    " (create_table_query LIKE '%fsync_after_insert = 1%' AND create_table_query LIKE '%fsync_part_directory = 1%'"
    " AND create_table_query LIKE '%min_rows_to_fsync_after_merge = 1%')"
)


def test_every_table_writes_each_insert_merge_and_mutation_to_disk(clickhouse_dsn: str) -> None:
    # The worker acknowledges a batch once its insert returns, and an erasure is done once its mutations are
    # (tests/fault/test_power.py shows what a host crash does otherwise). A table made or rebuilt by a later
    # migration without the settings fails here.
    client = connect(clickhouse_dsn)
    migrate(client)
    assert client.query(SYNCED_TABLES).result_rows == []
    # A table of operators' records made again where a restore found it missing (migration.keep_up).
    client.command("DROP TABLE restores SYNC")
    migrate(client)
    assert client.query(SYNCED_TABLES).result_rows == []


def test_a_migrated_store_is_left_untouched_by_the_next_start(clickhouse_dsn: str) -> None:
    # Every start altered `restores` and `erasures` (ADD COLUMN IF NOT EXISTS), which writes a table's
    # definition again: on a full disk that left restores.sql empty, and the store never opened again.
    client = connect(clickhouse_dsn)
    migrate(client, retention_days=30)
    before = client.query(DEFINITIONS).result_rows
    time.sleep(1.1)  # the catalog keeps definitions' times to the second
    assert migrate(client, retention_days=30) == []
    assert client.query(DEFINITIONS).result_rows == before


@pytest.mark.parametrize("crash", ["none", "after the column, before the ledger"])
def test_migration_20_keeps_the_audit_and_counts_erasures_recorded_before_it_whole(
    clickhouse_dsn: str, crash: str
) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    # The audit as a store before migration 20 had it, with one erasure in it.
    client.command("ALTER TABLE erasures DROP COLUMN complete")
    client.command("ALTER TABLE schema_migrations DELETE WHERE version = 20 SETTINGS mutations_sync = 2")
    old = ["e-1", 1_700_000_000_000, "operator", "ab" * 32, 40, 2]
    client.insert(
        "erasures", [old], column_names=["erasure_id", "erased_at", "key_name", "user_hash", "events", "dead_letters"]
    )
    if crash != "none":
        client.command(COMPLETE)
    assert 20 in {migration.version for migration in MIGRATIONS}
    assert migrate(client) == [20]
    records, _ = Audit(client).records(None, 10)
    assert [(record.erasure_id, record.events, record.complete) for record in records] == [("e-1", 40, True)]
    assert migrate(client) == []


def at_version_2(client: clickhouse_connect.driver.Client) -> None:
    """The schema as eventpipe before migration 3 left it."""
    client.command(LEDGER)
    for migration in MIGRATIONS[:2]:
        for statement in migration.statements:
            client.command(statement)
        client.insert("schema_migrations", [[migration.version, migration.name]], column_names=["version", "name"])


def redelivered(received_ms: int) -> Event:
    """An event with neither id nor timestamp: each copy is stamped with its own receive time."""
    row = parse("events/click", b'{"user_id": "u1"}', received_ms, Limits())
    assert isinstance(row, Event)
    return row


@pytest.mark.parametrize("crash", ["none", "before the swap", "after the swap"])
def test_migration_3_keeps_every_row_and_the_first_copy_wins_even_after_a_crash(
    clickhouse_dsn: str, crash: str
) -> None:
    client = connect(clickhouse_dsn)
    at_version_2(client)
    writer = Writer(client)
    first, later = redelivered(RECEIVED_MS), redelivered(RECEIVED_MS + 40 * 86_400_000)  # next month
    # As the writer of that version did: each copy with its own receive time.
    for rows in (sample(500), [first], [later]):
        client.insert("events", [list(row)[: len(EVENT_COLUMNS)] for row in rows], column_names=list(EVENT_COLUMNS))
    writer.insert_dead_letters([parse("events/x", b"{oops", RECEIVED_MS, Limits())])  # type: ignore[list-item]
    create = MIGRATIONS[2].rebuilds[0].create
    if crash == "before the swap":  # died while copying: a half-filled new table is left
        client.command(create.format(table="events_rebuild"))
        client.command("INSERT INTO events_rebuild SELECT * FROM events LIMIT 100")
    elif crash == "after the swap":  # died after the swap, while a worker still wrote to the old table
        client.command(create.format(table="events_rebuild"))
        client.command("INSERT INTO events_rebuild SELECT * FROM events")
        client.command("EXCHANGE TABLES events AND events_rebuild")
        writer_of_old = sample(1, prefix="late")[0]
        client.insert("events_rebuild", [list(writer_of_old)[: len(EVENT_COLUMNS)]], column_names=list(EVENT_COLUMNS))

    assert migrate(client) == [m.version for m in MIGRATIONS[2:]]
    reader = Reader(client)
    assert reader.count_events() == 501 + int(crash == "after the swap")
    assert reader.count_dead_letters() == 1
    assert reader.event(first.event_id) == first._replace(undated=False), (
        "the first copy, not the redelivery, is the event"
    )
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert "events_rebuild" not in tables and "dead_letters_rebuild" not in tables
    assert migrate(client) == []


def test_retention_is_set_and_removed_by_the_settings(client: clickhouse_connect.driver.Client) -> None:
    def ttl() -> str:
        return str(
            client.command(
                "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
            )
        )

    migrate(client, retention_days=30)
    assert "TTL toDateTime(timestamp) + toIntervalDay(31)" in ttl(), "a day past the retention"
    migrate(client, retention_days=0)
    assert " TTL " not in ttl()


def test_written_events_read_back_with_every_field(client: clickhouse_connect.driver.Client) -> None:
    rows = sample(3)
    assert Writer(client).insert_events(rows) == []
    stored = client.query(
        "SELECT event_id, event_type, toUnixTimestamp64Milli(timestamp), toUnixTimestamp64Milli(received_at), "
        "user_id, topic, properties FROM events ORDER BY event_id"
    ).result_rows
    assert [tuple(r) for r in stored] == [
        (r.event_id, r.event_type, r.timestamp_ms, r.received_ms, r.user_id, r.topic, r.properties) for r in rows
    ]


def test_a_batch_written_twice_counts_once(client: clickhouse_connect.driver.Client) -> None:
    writer, reader = Writer(client), Reader(client)
    rows = sample(500)
    writer.insert_events(rows)
    # A redelivered part of the batch, written by a restarted worker (one writer leaves out copies of
    # a millisecond it stored itself: store.copy.Tail).
    Writer(client).insert_events(rows[:200])
    assert client.command("SELECT count() FROM events") == 700  # before any merge
    assert reader.count_events() == 500


def test_rows_the_table_refuses_are_isolated_and_the_rest_stored(client: clickhouse_connect.driver.Client) -> None:
    rows = sample(64)
    # A lone surrogate cannot be encoded as UTF-8: the insert of any block holding it fails.
    rows[5] = rows[5]._replace(properties='{"bad":"\ud800"}')
    rows[40] = rows[40]._replace(properties='{"bad":"\udfff"}')
    refused = Writer(client).insert_events(rows)
    assert [index for index, _reason in refused] == [5, 40]
    assert all("Unicode" in reason for _index, reason in refused)
    assert Reader(client).count_events() == 62


def test_dead_letters_keep_the_raw_bytes_and_reason(client: clickhouse_connect.driver.Client) -> None:
    bad = parse("events/x", b"\xff\xfe not utf-8", RECEIVED_MS, Limits())
    assert isinstance(bad, Rejection)
    writer = Writer(client)
    writer.insert_dead_letters([bad, bad])
    row = client.query("SELECT topic, reason, detail, hex(payload), payload_size FROM dead_letters FINAL").result_rows
    assert len(row) == 1
    topic, reason, detail, payload_hex, size = row[0]
    assert (topic, reason, size) == ("events/x", "invalid_utf8", 12)
    assert bytes.fromhex(payload_hex) == b"\xff\xfe not utf-8"
    assert "UTF-8" in detail
    assert Reader(client).dead_letter_reasons() == {"invalid_utf8": 1}


def test_writing_without_the_schema_halts_rather_than_dropping(clickhouse_dsn: str) -> None:
    with pytest.raises(HaltStorageError, match=r"UNKNOWN_TABLE|Unknown table") as halted:
        Writer(connect(clickhouse_dsn)).insert_events(sample(1))
    # The worker logs this at every retry: it said only that worker_marks did not exist.
    assert "run `eventpipe migrate` on it" in str(halted.value)


def test_a_backfill_spanning_many_months_goes_in_as_one_batch(client: clickhouse_connect.driver.Client) -> None:
    month_ms = 31 * 24 * 3600 * 1000
    rows = []
    for i in range(150):  # 150 monthly partitions, past the engine's default of 100 per block
        body = {"event_id": f"old-{i}", "timestamp": 1_000_000_000_000 + i * month_ms}
        row = parse("events/backfill", json.dumps(body).encode(), RECEIVED_MS, Limits())
        assert isinstance(row, Event)
        rows.append(row)
    assert Writer(client).insert_events(rows) == []
    assert Reader(client).count_events() == 150


def test_a_writer_goes_on_writing_into_a_table_rebuilt_under_it(client: clickhouse_connect.driver.Client) -> None:
    # The writer remembers a table's columns between inserts; a failed insert
    # makes it ask again, so a table dropped and made anew takes the next one.
    writer, reader = Writer(client), Reader(client)
    create = client.query(
        "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
    ).result_rows[0][0]
    assert writer.insert_events(sample(10, "a")) == []
    assert writer.insert_events(sample(10, "b")) == []
    client.command("DROP TABLE events SYNC")
    with pytest.raises(HaltStorageError):
        writer.insert_events(sample(10, "c"))
    client.command(create)
    client.command("ALTER TABLE events ADD COLUMN added String DEFAULT 'new'")
    assert writer.insert_events(sample(10, "d")) == []
    assert reader.count_events() == 10


@pytest.mark.parametrize("rerun", [[13, 15], [15]])
def test_migrations_13_and_15_run_again_after_a_crash_still_find_every_event_by_id_once(
    client: clickhouse_connect.driver.Client, rerun: list[int]
) -> None:
    rows = sample(50)
    Writer(client).insert_events(rows)
    # As if it died after the projections were built, before they were recorded.
    client.command(
        "ALTER TABLE schema_migrations DELETE WHERE version IN {v:Array(UInt32)}",
        parameters={"v": rerun},
        settings={"mutations_sync": 2},
    )
    assert migrate(client) == rerun
    reader = Reader(client)
    assert [reader.event(row.event_id) for row in rows] == rows
    assert reader.count_events() == 50
    assert "event_ids" not in {row[0] for row in client.query("SHOW TABLES").result_rows}
    table = "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
    definition = client.command(table)
    assert "PROJECTION id_offsets" in definition
    assert "by_id " not in definition
    built = "SELECT sum(rows) FROM system.projection_parts WHERE database = currentDatabase() AND table = 'events'"
    assert client.command(built + " AND name = 'id_offsets' AND active") == 50


def copy_of(event_id: str, received_ms: int, n: int) -> Event:
    """A producer's re-send of one event (same id, type and time) carrying other properties."""
    body = {"event_id": event_id, "timestamp": RECEIVED_MS - 60_000, "user_id": "u1", "n": n}
    row = parse("events/click", json.dumps(body).encode(), received_ms, Limits())
    assert isinstance(row, Event)
    return row


def test_a_lookup_by_id_serves_the_copy_a_page_serves_while_the_copies_are_unmerged(
    client: clickhouse_connect.driver.Client,
) -> None:
    # The lookup reads every copy, without FINAL, so it must pick the one FINAL
    # keeps, the first received, in whichever order the copies were stored.
    writer, reader = Writer(client), Reader(client)
    client.command("SYSTEM STOP MERGES events")
    try:
        early, late = copy_of("a", RECEIVED_MS, 1), copy_of("a", RECEIVED_MS + 5_000, 2)
        writer.insert_events([early])
        writer.insert_events([late])
        first, second = copy_of("b", RECEIVED_MS, 1), copy_of("b", RECEIVED_MS + 5_000, 2)
        writer.insert_events([second])
        writer.insert_events([first])
        assert client.command("SELECT count() FROM events WHERE event_id IN ('a', 'b')") == 4
        assert reader.event("a") == early
        assert reader.event("b") == first
        assert sorted(reader.events(EventFilter(), 10)) == sorted([early, first])
    finally:
        client.command("SYSTEM START MERGES events")


def test_lookups_by_id_agree_with_the_pages_after_merges_that_drop_copies_and_erased_rows(
    client: clickhouse_connect.driver.Client,
) -> None:
    # A merge rewrites the offsets the projection holds: after one that drops
    # copies, and one that drops rows a lightweight delete masked, every id must
    # still be found, as the row the FINAL page shows.
    writer, reader = Writer(client), Reader(client)
    rows = sample(30)
    for part in range(3):
        writer.insert_events([copy._replace(received_ms=copy.received_ms + part) for copy in rows])
    erased = copy_of("gone", RECEIVED_MS, 1)._replace(user_id="gone-user")
    writer.insert_events([erased])
    client.command("OPTIMIZE TABLE events FINAL")
    page = {event.event_id: event for event in reader.events(EventFilter(), 100)}
    assert [reader.event(row.event_id) for row in rows] == [page[row.event_id] for row in rows]
    assert page["gone"] == reader.event("gone")
    client.command("DELETE FROM events WHERE user_id = 'gone-user'", settings={"lightweight_deletes_sync": 2})
    client.command("OPTIMIZE TABLE events FINAL")
    assert reader.event("gone") is None
    assert [reader.event(row.event_id) for row in rows] == [page[row.event_id] for row in rows]
    assert client.command("SELECT count() FROM events") == 30


def test_a_lookup_by_id_reads_the_granules_its_projection_selects_not_every_granule(
    client: clickhouse_connect.driver.Client,
) -> None:
    # Timing is not tested; the plan is. Without the projection the lookup would
    # read every granule of events, and cost what the table holds.
    writer = Writer(client)
    for part in range(3):
        writer.insert_events(sample(20, f"p{part}"))
    lookup = query_module.event_query("p1-3")
    explained = client.query("EXPLAIN indexes = 1, projections = 1 " + lookup.sql, parameters=lookup.parameters)
    plan = "\n".join(str(row[0]) for row in explained.result_rows)
    assert "Name: id_offsets" in plan
    assert "will be applied during reading" in plan


def test_an_undated_event_is_recorded_before_it_is_stored_so_a_copy_after_a_crash_finds_its_time(
    client: clickhouse_connect.driver.Client,
) -> None:
    writer, reader = Writer(client), Reader(client)
    first = redelivered(RECEIVED_MS)
    # Killed between the two inserts: the first copy's time recorded, the event not stored.
    writer._record_undated([first])
    assert reader.count_events() == 0
    writer.insert_events([redelivered(RECEIVED_MS + 5_000)])  # the broker's redelivery, received later
    writer.insert_events([redelivered(RECEIVED_MS + 9_000)])  # and once more
    assert reader.count_events() == 1
    assert [e.timestamp_ms for e in reader.events(EventFilter(), 10)] == [RECEIVED_MS]


def test_dated_events_that_arrive_in_the_millisecond_of_their_timestamp_are_each_kept(
    client: clickhouse_connect.driver.Client,
) -> None:
    # A device's readings, one id, each with its own timestamp: three events by the contract. Those
    # stamped in the millisecond they arrived (about 3 in 10 from a local producer) were taken for
    # undated copies and given the first one's time, so they vanished (533 of 2,000 in an attack).
    def reading(millis: int) -> Event:
        row = parse("events/x", json.dumps({"event_id": "dev-7", "timestamp": millis}).encode(), millis, Limits())
        assert isinstance(row, Event)
        return row

    writer, reader = Writer(client), Reader(client)
    writer.insert_events([reading(RECEIVED_MS)])
    writer.insert_events([reading(RECEIVED_MS + 5), reading(RECEIVED_MS + 9)])
    stored = sorted(e.timestamp_ms for e in reader.events(EventFilter(), 10))
    assert stored == [RECEIVED_MS, RECEIVED_MS + 5, RECEIVED_MS + 9]


def test_copies_of_many_undated_events_find_their_first_time_in_several_lookups(
    client: clickhouse_connect.driver.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first times are looked up by id, bound as one list; a ClickHouse server refuses a bound
    # value over 128 KiB (about 3,000 ids), and a 20,000-row batch can hold more undated events.
    # Cut to lists of about ten ids, every copy must still find its first copy's time.
    def undated(event_id: str, received_ms: int) -> Event:
        row = parse("events/x", json.dumps({"event_id": event_id}).encode(), received_ms, Limits())
        assert isinstance(row, Event)
        return row

    writer, reader = Writer(client), Reader(client)
    firsts = [undated(f"undated-{n:04}", RECEIVED_MS) for n in range(500)]
    writer.insert_events(firsts)
    monkeypatch.setattr(query_module, "PARAMETER_BYTES", 200)
    writer.insert_events([undated(f"undated-{n:04}", RECEIVED_MS + 7_000) for n in range(500)])  # re-sent later
    assert reader.count_events() == 500
    assert {e.timestamp_ms for e in reader.events(EventFilter(), 1000)} == {RECEIVED_MS}


def test_migration_11_keeps_events_without_a_user_out_of_the_user_index_and_drops_those_put_there(
    client: clickhouse_connect.driver.Client,
) -> None:
    # The store as migration 6 left it: its view, which let events without a user in as user ''.
    client.command("DROP VIEW events_by_user_feed_v3")
    client.command(f"CREATE MATERIALIZED VIEW events_by_user_feed TO events_by_user AS {BY_USER_ROWS}")
    client.command("ALTER TABLE schema_migrations DELETE WHERE version = 11", settings={"mutations_sync": 2})
    writer = Writer(client)

    def stored(prefix: str, user: str | None) -> list[Event]:
        body = {} if user is None else {"user_id": user}
        rows = [
            parse("events/x", json.dumps({"event_id": f"{prefix}{i}", **body}).encode(), RECEIVED_MS + i, Limits())
            for i in range(20)
        ]
        assert writer.insert_events(rows) == []  # type: ignore[arg-type]
        return rows  # type: ignore[return-value]

    stored("anonymous-", None)
    stored("known-", "u1")
    assert client.command("SELECT count() FROM events_by_user WHERE user_id = ''") == 20
    assert migrate(client) == [11]
    assert migrate(client) == []
    wait_until(lambda: client.command("SELECT count() FROM events_by_user WHERE user_id = ''") == 0, what="'' gone")
    stored("later-", None)
    stored("later-known-", "u1")
    assert client.command("SELECT count() FROM events_by_user WHERE user_id = ''") == 0
    assert client.command("SELECT count() FROM events_by_user FINAL") == 40
    assert len(Reader(client).events(EventFilter(None, "u1"), 100)) == 40


def test_two_writers_of_one_process_storing_copies_of_undated_events_at_once_show_each_once(
    clickhouse_dsn: str,
) -> None:
    import threading

    # The worker and the API's replay, in one `eventpipe up`: each looked the first times up, found
    # none, and recorded and stored its own, so both copies showed (3,243 of 20,000 in an attack that
    # re-published undated messages during a replay of their dead letters).
    migrate(connect(clickhouse_dsn))
    rounds, size = 20, 20
    start = threading.Barrier(2)

    def copies(index: int) -> None:
        writer = Writer(connect(clickhouse_dsn))
        for round_ in range(rounds):
            batch = [
                parse("events/x", json.dumps({"event_id": f"r{round_}-{n}"}).encode(), RECEIVED_MS + index, Limits())
                for n in range(size)
            ]
            start.wait(10)
            writer.insert_events(batch)  # type: ignore[arg-type]

    threads = [threading.Thread(target=copies, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert Reader(connect(clickhouse_dsn)).count_events() == rounds * size


def test_a_passing_failure_of_the_canary_while_isolating_a_refused_row_is_retried_not_a_halt(
    client: clickhouse_connect.driver.Client,
) -> None:
    from eventpipe.errors import RetryableStorageError

    client.command("ALTER TABLE events ADD CONSTRAINT no_banned CHECK user_id IS NULL OR user_id != 'banned'")

    class Strained(Writer):
        """The canary meets a memory limit once, as a store under load may."""

        strained = 1

        def _canary_failure(self) -> StorageError | None:
            if self.strained:
                self.strained -= 1
                return RetryableStorageError("MEMORY_LIMIT_EXCEEDED (241)")
            return super()._canary_failure()

    writer = Strained(client)
    rows = [redelivered(RECEIVED_MS)._replace(event_id=f"s-{n}", user_id="banned" if n == 3 else "u") for n in range(8)]
    # The canary's own error, retried with backoff; a halt said "refuses a known-good row" and waited.
    with pytest.raises(RetryableStorageError, match="MEMORY_LIMIT"):
        writer.insert_events(rows)
    assert [index for index, _reason in writer.insert_events(rows)] == [3]
