"""Backups and restores on the real engine: what a restore brings back, what it rebuilds, what it refuses."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.api.keyring import Keyring
from eventpipe.errors import BackupError
from eventpipe.store import disk, redo
from eventpipe.store.audit import ERASURE_COLUMNS, Audit, Erasure
from eventpipe.store.backup import Backups
from eventpipe.store.client import backup_dir
from eventpipe.store.erasure import Eraser
from eventpipe.store.feed import Feed, FeedRewound, Place
from eventpipe.store.mark import MARKS_QUERY, complete_before
from eventpipe.store.migration import DERIVED, KEPT, SOURCE, migrate
from eventpipe.store.naming import new_name
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.restoration import mark
from eventpipe.store.writer import Mark, Writer
from tests.support.api import AUTH, KEY, event, readonly_reader, rejection

MARCH_MS = 1_772_323_200_000
ADMIN = "admin-key-0123456789abcdef"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def seed(client: clickhouse_connect.driver.Client, prefix: str, count: int) -> set[str]:
    """`count` events, every third with a user and every fifth without its own timestamp; their ids."""
    events = []
    for i in range(count):
        body: dict[str, object] = {"event_id": f"{prefix}{i}", "n": i}
        if i % 3 == 0:
            body["user_id"] = f"u{i % 4}"
        if i % 5:
            body["timestamp"] = MARCH_MS + i
        events.append(event(f"events/t{i % 2}", body, MARCH_MS + 10_000 + i))
    Writer(client).insert_events(events)
    return {f"{prefix}{i}" for i in range(count)}


def ids(client: clickhouse_connect.driver.Client, table: str = "events", where: str = "") -> list[str]:
    sql = f"SELECT event_id FROM {table} FINAL {where}"  # noqa: S608 - the test's own constants
    return [row[0] for row in client.query(sql).result_rows]


def test_every_table_the_migrations_create_has_a_backup_rule(client: clickhouse_connect.driver.Client) -> None:
    # A new table must be declared: restored as the backup holds it, derived from events, or kept.
    sql = "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View'"
    tables = {row[0] for row in client.query(sql).result_rows}
    rules = [set(SOURCE), set(DERIVED), set(KEPT)]
    assert tables == set.union(*rules), f"tables without a rule: {tables - set.union(*rules)}"
    assert sum(len(rule) for rule in rules) == len(tables), "a table has two rules"


def test_a_restore_brings_back_the_backup_and_rebuilds_what_derives_from_events(
    client: clickhouse_connect.driver.Client,
) -> None:
    kept = seed(client, "a", 60)
    Writer(client).insert_dead_letters([rejection("events/bad", b"\xff", MARCH_MS)])
    # Derived tables out of step with events, as a backup taken between two tables' snapshots finds them:
    # a0 lost from the user index, a ghost in it.
    client.command("DELETE FROM events_by_user WHERE event_id = 'a0'")
    client.command("INSERT INTO events_by_user SELECT 'ghost', event_type, timestamp, received_at, 'u0', topic,"
                   " properties, first_copy FROM events_by_user LIMIT 1")  # fmt: skip
    backups = Backups(client)
    taken = backups.take("test")
    assert (taken.events, taken.dead_letters) == (60, 1)

    later = seed(client, "b", 25)
    restored = backups.restore(taken.name, 0, "test")

    assert (restored.events, restored.dead_letters) == (60, 1)
    assert sorted(ids(client)) == sorted(kept), "exactly the backed-up events, none of those stored after"
    assert not later & set(ids(client))
    # Each derived table is what its feed makes of the restored events, the ghost gone and a0 back.
    for table, rows in DERIVED.items():
        fed = client.query(f"SELECT * FROM ({rows})").result_rows  # noqa: S608 - the test's own constants
        held = client.query(f"SELECT * FROM {table}").result_rows  # noqa: S608 - every row, copies too
        assert sorted(map(repr, held)) == sorted(map(repr, fed)), table
    assert "a0" in ids(client, "events_by_user") and "ghost" not in ids(client, "events_by_user")
    assert sorted(ids(client, "undated_events")) == sorted(f"a{i}" for i in range(0, 60, 5))
    reader = Reader(client)
    assert all(reader.event(event_id) is not None for event_id in kept), "GET /events/{id} finds every one"
    assert reader.event("ghost") is None
    # The store goes on: the views feed the derived tables again, and ids are found.
    seed(client, "c", 3)
    assert "c0" in ids(client, "events_by_user")
    assert all(reader.event(event_id) is not None for event_id in ("c0", "c1", "c2"))


def test_a_restore_keeps_what_it_replaced_as_a_backup_that_undoes_it(client: clickhouse_connect.driver.Client) -> None:
    first = seed(client, "a", 10)
    backups = Backups(client)
    taken = backups.take("test")
    both = first | seed(client, "b", 7)

    replaced = backups.restore(taken.name, 0, "test").replaced
    assert replaced is not None and replaced.events == 17
    assert set(ids(client)) == first

    undone = backups.restore(replaced.name, 0, "test")
    assert undone.events == 17 and set(ids(client)) == both


def test_a_restore_whose_count_of_erasures_since_fails_is_done_all_the_same(
    client: clickhouse_connect.driver.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The count runs once the store is restored: its failure must not report a finished restore as failed.
    first = seed(client, "a", 10)
    backups = Backups(client)
    taken = backups.take("test")
    seed(client, "b", 7)
    monkeypatch.setattr(redo, "erased_since", lambda *_: ("SELECT count(), 0 FROM no_such_table", {}))
    restored = backups.restore(taken.name, 0, "test")
    assert restored.erased_since is None and restored.events == 10
    assert set(ids(client)) == first


def test_a_backup_from_a_newer_store_restored_onto_an_older_one_leaves_the_audit_writable(
    client: clickhouse_connect.driver.Client,
) -> None:
    # The backup's ledger lists migrations 19 and 20; the store it is restored onto has the kept
    # tables as they were before them. A restore keeps those tables and brings back the ledger, so
    # those migrations never ran here: the restore failed (19), or every erasure after it did (20).
    source = seed(client, "a", 5)
    taken = Backups(client).take("test")
    client.command("ALTER TABLE restores DROP COLUMN finished")
    client.command("ALTER TABLE erasures DROP COLUMN complete")
    assert set(ids(client)) == source

    assert Backups(client).restore(taken.name, 0, "test").events == 5
    audit = Audit(client)
    audit.record(Erasure("e-1", MARCH_MS, "operator", "ab" * 32, 3, 0, complete=False))
    assert [(record.erasure_id, record.complete) for record in audit.records(None, 10)[0]] == [("e-1", False)]
    assert migrate(client) == []


def test_a_backup_recorded_before_its_place_in_the_audit_was_is_ordered_by_time(
    client: clickhouse_connect.driver.Client,
) -> None:
    # A store from before migration 24: kept tables without the columns that place backups, restores and
    # erasures in the audit's order. A restore adds them (its ledger already lists 24) and orders what came
    # before by time: an old erasure after the backup's time counts, and every one numbered since does,
    # whatever its time says.
    seed(client, "a", 5)
    taken = Backups(client).take("test")
    for table, column in (("backups", "ordinal_before"), ("erasures", "ordinal"), ("restores", "ordinal")):
        client.command(f"ALTER TABLE {table} DROP COLUMN {column}")
    old = Erasure("e-old", taken.taken_ms + 1000, "operator", "ab" * 32, 1, 0, complete=True)
    client.insert("erasures", [list(old)], column_names=ERASURE_COLUMNS)
    assert Backups(client).restore(taken.name, 0, "test").erased_since == 1
    # Numbered now, with a time from before the backup (a clock set back): after it all the same.
    Audit(client).record(Erasure("e-new", taken.taken_ms - 3_600_000, "operator", "cd" * 32, 1, 0, True))
    assert Backups(client).restore(taken.name, 0, "test").erased_since == 2
    assert migrate(client) == []


def test_a_backup_from_a_newer_eventpipe_is_refused_as_newer_whatever_its_tables_engines(clickhouse_dsn: str) -> None:
    # A later migration may make a table with an engine this version never did: it was refused as
    # "not an eventpipe backup", not with the way out, running the newer eventpipe (found by the review).
    newer = _migrated(clickhouse_dsn)
    newer.command("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')")
    newer.command("DROP TABLE arrivals SYNC")
    newer.command("CREATE TABLE arrivals (event_id String) ENGINE = ReplacingMergeTree ORDER BY event_id")
    taken = Backups(newer).take("test")
    for (table,) in newer.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows:
        if table not in KEPT:
            newer.command(f"DROP TABLE IF EXISTS `{table}` SYNC")
    client = _migrated(clickhouse_dsn)
    with pytest.raises(BackupError, match=r"is at schema version 99, this eventpipe knows up to \d+: run the newer"):
        Backups(client).restore(taken.name, 0, "test")


def test_a_restore_onto_an_empty_store_takes_no_backup_of_it(clickhouse_dsn: str) -> None:
    source = seed(_migrated(clickhouse_dsn), "a", 5)
    client = _migrated(clickhouse_dsn)
    backups = Backups(client)
    taken = backups.take("test")
    for table in ("events", "dead_letters"):
        client.command(f"TRUNCATE TABLE {table}")
    restored = backups.restore(taken.name, 0, "test")
    assert restored.replaced is None and set(ids(client)) == source


def test_a_missing_or_malformed_backup_changes_nothing(client: clickhouse_connect.driver.Client) -> None:
    stored = seed(client, "a", 8)
    backups = Backups(client)
    with pytest.raises(BackupError, match="no backup named 20990101T000000Z-abcdef"):
        backups.restore("20990101T000000Z-abcdef", 0, "test")
    for name in ("../../etc/passwd", "20990101T000000Z-abcdef') SETTINGS x=1 --", ""):
        with pytest.raises(BackupError, match="is not a backup name"):
            backups.restore(name, 0, "test")
    assert set(ids(client)) == stored
    assert backups.listing() == [], "a refused restore backed nothing up"


def test_what_a_backup_counts_is_what_reads_count(client: clickhouse_connect.driver.Client) -> None:
    writer = Writer(client)
    copy = event("events/t", {"event_id": "same", "timestamp": MARCH_MS}, MARCH_MS)
    writer.insert_events([copy])
    Writer(client).insert_events([copy])  # a redelivery to a restarted worker: a second row until a merge
    writer.insert_events([event("events/_probe", {"event_id": "probe-1"}, MARCH_MS)])
    seed(client, "a", 4)
    assert client.command("SELECT count() FROM events") == 7
    assert Backups(client).take("test").events == 5


def test_the_list_outlives_a_restore_and_leaves_out_a_backup_removed_from_the_disk(clickhouse_dsn: str) -> None:
    client = _migrated(clickhouse_dsn)
    seed(client, "a", 3)
    backups = Backups(client)
    first = backups.take("test")
    seed(client, "b", 3)
    second = backups.take("test")
    safety = backups.restore(first.name, 0, "test").replaced
    assert safety is not None
    assert [backup.name for backup in backups.listing()] == [safety.name, second.name, first.name]
    assert walked(backups, 2) == [[safety.name, second.name], [first.name]]

    directory = backup_dir(clickhouse_dsn)
    if directory is None:
        pytest.skip("the server's backups disk is not on this machine")  # the container path
    shutil.rmtree(directory / second.name)
    assert [backup.name for backup in backups.listing()] == [safety.name, first.name]
    # Pages are of the backups recorded, then those gone from the disk left out: one may come short.
    assert walked(backups, 1) == [[safety.name], [], [first.name]]


def walked(backups: Backups, limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        found, after = backups.page(limit, after)
        pages.append([backup.name for backup in found])
        if after is None:
            return pages


def test_the_admin_routes_need_an_admin_key_and_log_its_name(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = _migrated(clickhouse_dsn)
    seed(client, "a", 12)
    app = create_app(
        readonly_reader(clickhouse_dsn), CollectorRegistry(), Keyring([KEY], generated=ADMIN), backups=Backups(client)
    )
    api = TestClient(app, raise_server_exceptions=False)

    for method in ("GET", "POST"):
        refused = api.request(method, "/admin/backups", headers=AUTH)
        assert refused.status_code == 403, refused.text
        assert refused.json() == {
            "error": "forbidden",
            "detail": 'this endpoint needs an admin key: one marked "admin": true in EVENTPIPE_API_KEYS_FILE '
            "(no key of EVENTPIPE_API_KEYS is)",
        }
        assert api.request(method, "/admin/backups").status_code == 401
        assert api.request(method, "/admin/backups", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert api.request(method, "/admin/backups", params={"x": "1"}, headers=AUTH).status_code == 403
    assert Backups(client).listing() == [], "a refused request took a backup"
    # Allow names every method of the path: it said POST alone, though GET lists the backups.
    refused = api.delete("/admin/backups", headers=AS_ADMIN)
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD, POST")

    with caplog.at_level(logging.INFO, logger="eventpipe.api.backup"):
        taken = api.post("/admin/backups", headers=AS_ADMIN)
        assert taken.status_code == 200, taken.text
        body = taken.json()
        assert body["events"] == 12 and body["dead_letters"] == 0 and body["bytes"] > 0
        listed = api.get("/admin/backups", headers=AS_ADMIN)
    assert listed.status_code == 200 and listed.json() == {"items": [body], "next_cursor": None}
    one = api.get("/admin/backups", params={"limit": 1}, headers=AS_ADMIN).json()
    assert one == {"items": [body], "next_cursor": None}
    forged = api.get("/admin/backups", params={"cursor": "AAAA" * 10}, headers=AS_ADMIN)
    assert forged.status_code == 422 and forged.json()["error"] == "invalid_parameter", forged.text
    for limit in (0, 101):  # each listed is opened on the disk: a tenth of other lists' pages
        assert api.get("/admin/backups", params={"limit": limit}, headers=AS_ADMIN).status_code == 422
    logged = [record.getMessage() for record in caplog.records]
    assert any("up#generated" in line and body["name"] in line for line in logged), logged
    assert not any(ADMIN in line for line in logged)
    assert api.post("/admin/backups?x=1", headers=AS_ADMIN).status_code == 422
    # It takes no body: a name or an option asked for there would be silently not honoured.
    named = api.post("/admin/backups", json={"name": "nightly"}, headers=AS_ADMIN)
    assert named.status_code == 422 and named.json()["detail"] == "this endpoint takes no body", named.text
    assert len(Backups(client).listing()) == 1, "a refused request took a backup"


def test_a_failed_backup_answers_500_backup_failed_with_the_reason_as_the_openapi_document_says(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The document named only `storage_error` for the route's 500."""
    client = _migrated(clickhouse_dsn)
    app = create_app(
        readonly_reader(clickhouse_dsn), CollectorRegistry(), Keyring(generated=ADMIN), backups=Backups(client)
    )
    api = TestClient(app, raise_server_exceptions=False)
    monkeypatch.setattr(disk, "SPARE_BYTES", 1 << 60)  # this disk's room is what it is: the spare is raised past it
    failed = api.post("/admin/backups", headers=AS_ADMIN)
    assert failed.status_code == 500 and failed.json()["error"] == "backup_failed", failed.text
    assert "the backups disk has" in failed.json()["detail"], failed.text
    promised = api.get("/openapi.json").json()["paths"]["/admin/backups"]["post"]["responses"]["500"]
    assert "`backup_failed`" in promised["description"], promised


def _migrated(dsn: str) -> clickhouse_connect.driver.Client:
    from eventpipe.store.client import connect

    client = connect(dsn)
    migrate(client)
    return client


def _flipped(where: str, pick: Callable[[Iterable[Path]], Path] = min) -> Callable[[Path], None]:
    """64 bytes changed in the middle of a file of events, as a bad disk or a careless copy would; in the
    first part holding one, or the one `pick` picks."""

    def damage(backup: Path) -> None:
        found = (backup / "data").rglob("*.bin")
        data = pick(path for path in found if where in (path.parent.name, path.parent.parent.name))
        damaged = bytearray(data.read_bytes())
        middle = len(damaged) // 2
        damaged[middle : middle + 64] = bytes(b ^ 0xFF for b in damaged[middle : middle + 64])
        data.write_bytes(bytes(damaged))

    return damage


def _part_gone(backup: Path) -> None:
    shutil.rmtree(min((backup / "data").glob("*/events/*_*")))


def _column_file_gone(backup: Path) -> None:
    min((backup / "data").glob("*/events/*/*.bin")).unlink()


def _file_list_gone(backup: Path) -> None:
    (backup / ".backup").write_text("<config></config>")


# A column file and the id lookup's projection changed (which a read of every column missed); a part's
# folder gone passed every check, and RESTORE then failed after the drop, leaving `events` empty; the
# last two failed with ClickHouse's raw error. One whose file list is gone is left out of the list.
@pytest.mark.parametrize(
    ("damage", "listed"),
    [
        (_flipped("events"), True),
        # The last part of a table of several: the check read only each table's first part's verdict.
        (_flipped("events", max), True),
        (_flipped("id_offsets.proj"), True),
        (_part_gone, True),
        (_column_file_gone, True),
        (_file_list_gone, False),
    ],
)
def test_a_damaged_backup_is_refused_before_the_store_is_touched(
    clickhouse_dsn: str, damage: Callable[[Path], None], listed: bool
) -> None:
    client = _migrated(clickhouse_dsn)
    seed(client, "a", 100)
    seed(client, "z", 100)  # another insert: each table of events holds two parts, unmerged
    backups = Backups(client)
    taken = backups.take("test")
    directory = backup_dir(clickhouse_dsn)
    if directory is None:
        pytest.skip("the server's backups disk is not on this machine")  # the container path
    seed(client, "b", 5)
    damage(directory / taken.name)
    live, by_user = set(ids(client)), set(ids(client, "events_by_user"))
    with pytest.raises(BackupError, match=f"(?s)backup {taken.name} cannot be read.*nothing was changed"):
        backups.restore(taken.name, 0, "test")
    assert set(ids(client)) == live and len(live) == 205 and set(ids(client, "events_by_user")) == by_user
    # A refused restore backed nothing up.
    assert [backup.name for backup in backups.listing()] == ([taken.name] if listed else [])


def test_a_backup_taken_after_an_erasure_holds_none_of_the_erased_rows(clickhouse_dsn: str) -> None:
    client = _migrated(clickhouse_dsn)
    seed(client, "a", 60)
    Writer(client).insert_dead_letters([rejection("events/bad", b'{"user_id": "u1", "x": ', MARCH_MS)])
    Eraser(client).erase("u1")
    taken = Backups(client).take("test")
    # Read the backup itself with masks off, as anyone holding its files could.
    scratch, database = "erased_check", client.command("SELECT currentDatabase()")
    client.command(f"CREATE DATABASE {scratch} ENGINE = Backup('{database}', Disk('backups', '{taken.name}'))")
    try:
        for table in ("events", "events_by_user", "arrivals", "dead_letters"):
            column = "payload" if table == "dead_letters" else "user_id"
            sql = f"SELECT count() FROM {scratch}.{table} WHERE {column} LIKE '%u1%' SETTINGS apply_deleted_mask = 0"  # noqa: S608
            assert client.command(sql) == 0, table
        held = client.command(f"SELECT count() FROM {scratch}.events SETTINGS apply_deleted_mask = 0")  # noqa: S608
        assert held == 55  # the other users' events and those without a user
    finally:
        client.command(f"DROP DATABASE IF EXISTS {scratch}")


def test_an_erasure_after_a_restore_takes_the_users_rows_from_every_table(clickhouse_dsn: str) -> None:
    # Erasures and purges before the backup leave its parts marked as mutated up to a number the
    # restored table's fresh counter starts below: ClickHouse took the next deletes for applied to them,
    # said done and deleted nothing, until the server restarted.
    client = _migrated(clickhouse_dsn)
    seed(client, "a", 60)
    Writer(client).insert_dead_letters([rejection("events/bad", b'{"user_id": "u2", "x": ', MARCH_MS)])
    eraser = Eraser(client)
    for _ in range(3):
        eraser.erase("u1")
    backups = Backups(client)
    backups.restore(backups.take("test").name, 0, "test")

    erased = eraser.erase("u2")

    users = [f"a{i}" for i in range(6, 60, 12)]  # u2's events; a30 has no timestamp of its own
    assert (erased.events, erased.dead_letters, erased.complete) == (len(users), 1, True)
    for table in ("events", "events_by_user", "arrivals", "undated_events"):
        sql = f"SELECT count() FROM {table} WHERE event_id IN {{users:Array(String)}}"  # noqa: S608 - constants
        assert client.command(sql, parameters={"users": users}) == 0, table
    assert client.command("SELECT count() FROM dead_letters WHERE payload LIKE '%u2%'") == 0
    assert all(Reader(client).event(event_id) is None for event_id in users), "GET /events/{id} serves none"


def test_a_feed_token_from_before_a_restore_is_refused_for_good(client: clickhouse_connect.driver.Client) -> None:
    feed = Feed(Reader(client).run)
    seed(client, "a", 10)
    taken = Backups(client).take("test")
    for batch in range(5):
        seed(client, f"b{batch}-", 10)
    place = Place()
    while place.hi is not None or place == Place():
        place = feed.page(EventFilter(), 1000, place).next
    assert place.lo > 0  # a sync that has caught up
    Backups(client).restore(taken.name, 0, "test")
    # Past the old place's numbers: the rebuilt arrivals number afresh, so numbers alone cannot tell.
    for batch in range(20):
        seed(client, f"c{batch}-", 10)
    numbered = "SELECT max(max_block_number) FROM system.parts WHERE table = 'arrivals' AND active"
    assert client.command(numbered + " AND database = currentDatabase()") > place.lo
    with pytest.raises(FeedRewound):
        feed.page(EventFilter(), 1000, place)
    # A sync that starts again gets every event the store holds.
    fresh, served = Place(), set()
    while fresh.hi is not None or fresh == Place():
        page = feed.page(EventFilter(), 1000, fresh)
        served |= {event.event_id for event in page.rows}
        fresh = page.next
    assert served == set(ids(client))

    # On a new server the restores' records start empty again: a token of the last generation is still refused.
    client.command("TRUNCATE TABLE restores")
    Backups(client).restore(taken.name, 0, "test")
    for batch in range(40):
        seed(client, f"d{batch}-", 10)
    assert client.command(numbered + " AND database = currentDatabase()") > fresh.lo
    with pytest.raises(FeedRewound):
        feed.page(EventFilter(), 1000, fresh)


def test_nothing_starts_on_a_store_a_restore_left_half_done_and_running_it_again_finishes_it(
    clickhouse_dsn: str,
) -> None:
    client = _migrated(clickhouse_dsn)
    stored = seed(client, "a", 30)
    backups = Backups(client)
    taken = backups.take("test")
    # What a restore leaves when it stops after its drop: its first row, and derived tables not rebuilt.
    client.insert(
        "restores",
        [[datetime.now(UTC), taken.name, "test", 7, 0]],
        column_names=["restored_at", "backup", "taken_by", "restore_id", "finished"],
    )
    client.command("TRUNCATE TABLE events_by_user")
    with pytest.raises(
        BackupError, match=f"half restored.*run it again \\(`eventpipe restore --data-dir DIR --backup {taken.name}`"
    ):
        migrate(client)
    restored = backups.restore(taken.name, 0, "test")
    assert restored.replaced is None, "the half-restored store was backed up"
    assert migrate(client) == []
    assert set(ids(client)) == stored and len(ids(client, "events_by_user")) == 10


class Feeding:
    """The real client, and a feed's first page taken while its restore runs, once it has dropped the store."""

    def __init__(self, client: clickhouse_connect.driver.Client) -> None:
        self._client, self.place = client, Place()

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def command(self, sql: str, **kwargs: object) -> object:
        if sql.startswith("TRUNCATE TABLE") and self.place == Place():
            self.place = Feed(Reader(self._client).run).page(EventFilter(), 1000, Place()).next
        return self._client.command(sql, **kwargs)


def test_a_feed_token_outlives_a_restore_stopped_before_its_drop_and_none_issued_during_one_does(
    client: clickhouse_connect.driver.Client,
) -> None:
    feed = Feed(Reader(client).run)
    seed(client, "a", 10)
    taken = Backups(client).take("test")
    place = feed.page(EventFilter(), 1000, Place()).next
    # What a restore killed between its first row and its drop leaves: the ledger's mark, and that row.
    mark(client, 7)
    client.insert(
        "restores",
        [[datetime.now(UTC), taken.name, "test", 7, 0]],
        column_names=["restored_at", "backup", "taken_by", "restore_id", "finished"],
    )
    # The store is as it was: every partner's token was turned away, and each synced again for nothing.
    assert feed.page(EventFilter(), 1000, place).next.lo >= place.lo
    during = Feeding(client)
    Backups(during).restore(taken.name, 0, "test")  # type: ignore[arg-type]
    assert during.place.hi is not None or during.place.lo > 0, "a page was served during the restore"
    for stale in (place, during.place):
        with pytest.raises(FeedRewound, match="restored since"):
            feed.page(EventFilter(), 1000, stale)


@pytest.mark.parametrize(
    ("tables", "reason"),
    [
        # DatabaseError: Code: 60 ... UNKNOWN_TABLE, raw.
        ((), r"no schema_migrations table"),
        # Every check passed, the store was dropped, and each rerun failed on ILLEGAL_FINAL.
        (
            ("CREATE TABLE schema_migrations (version UInt32, name String) ENGINE = MergeTree ORDER BY version",),
            r"schema_migrations is MergeTree",
        ),
        # Every engine eventpipe's, the migrations failed after the drop (found by the review).
        (
            ("CREATE TABLE schema_migrations (version UInt64) ENGINE = ReplacingMergeTree ORDER BY version",),
            r"schema_migrations has no version UInt32, schema_migrations has no name String",
        ),
    ],
    ids=["without a ledger", "a ledger of another engine", "a ledger of other columns"],
)
def test_a_foreign_backup_is_refused_before_anything_changes(
    clickhouse_dsn: str, tables: tuple[str, ...], reason: str
) -> None:
    from eventpipe.store.client import connect

    # A plain BACKUP of this database holding tables of eventpipe's names, none made by eventpipe.
    foreign, name = connect(clickhouse_dsn), new_name(MARCH_MS)
    for create in (
        "CREATE TABLE events (event_id String, event_type String) ENGINE = ReplacingMergeTree ORDER BY event_id",
        "CREATE TABLE dead_letters (x String) ENGINE = ReplacingMergeTree ORDER BY x",
        *tables,
    ):
        foreign.command(create)
    foreign.command("INSERT INTO events VALUES ('a', 'x'), ('b', 'y')")
    foreign.command(f"BACKUP DATABASE {foreign.command('SELECT currentDatabase()')} TO Disk('backups', '{name}')")
    for table in ("events", "dead_letters", "schema_migrations"):
        foreign.command(f"DROP TABLE IF EXISTS {table} SYNC")
    client = _migrated(clickhouse_dsn)
    stored = seed(client, "a", 8)
    for _ in range(2):  # and again: it changed nothing, so it says the same
        with pytest.raises(
            BackupError, match=rf"^backup {name} is not an eventpipe backup \({reason}.*\); nothing was changed"
        ):
            Backups(client).restore(name, 0, "test")
    assert set(ids(client)) == stored
    assert Backups(client).listing() == [], "a refused restore backed nothing up"


def test_a_worker_live_in_the_backup_holds_nothing_back_after_the_restore_unless_it_comes_back(
    client: clickhouse_connect.driver.Client,
) -> None:
    # Restored live, a worker that never came back (scaled down, or named otherwise on a new host) held the
    # feed's complete_until at the backup's moment for good, and every erasure answered incomplete.
    def complete_until() -> int:
        return complete_before(client.query(MARKS_QUERY.sql, parameters=MARKS_QUERY.parameters).result_rows[0])

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    writer = Writer(client)
    seed(client, "a", 10)
    stamped = now_ms() - 3_600_000  # its last mark, an hour before the backup
    session = Mark("gone-worker#session-0123456789abcdef", complete_before=3600, retired=True, written=stamped)
    writer.insert_marks([Mark("gone-worker", complete_before=stamped, retired=False, written=stamped), session])
    assert complete_until() == stamped
    taken = Backups(client).take("test")
    Backups(client).restore(taken.name, 0, "test")
    assert complete_until() >= now_ms() - 60_000, "held at its last mark by a worker that is gone"
    # Its session mark still says when the session was last held (a start reads it: ingest.handshake).
    assert writer.last_mark(session.worker) == (stamped, 3600)
    # A worker that comes back marks itself live at its start, and holds complete_until as before: also when
    # its clock is behind the restoring machine's (here an hour), which the retirement is not stamped with.
    back = stamped + 2
    writer.insert_marks([Mark("gone-worker", complete_before=back, retired=False, written=back)])
    assert complete_until() == back


def test_a_restore_is_refused_while_a_worker_marks_itself_running(client: clickhouse_connect.driver.Client) -> None:
    # On a server nothing else stops it: its inserts would be lost, and it would be retired while it runs.
    seed(client, "a", 10)
    taken = Backups(client).take("test")
    seed(client, "b", 5)
    now = time.time_ns() // 1_000_000
    Writer(client).insert_marks([Mark("ingest-worker-1", complete_before=now, retired=False, written=now)])
    with pytest.raises(BackupError, match="ingest-worker-1 marked themselves running within the last 10 s"):
        Backups(client).restore(taken.name, 0, "test")
    assert len(ids(client)) == 15, "nothing was changed"
    # Stopped, it retires itself: then the restore goes ahead.
    Writer(client).insert_marks([Mark("ingest-worker-1", complete_before=0, retired=True, written=now + 1)])
    assert Backups(client).restore(taken.name, 0, "test").events == 10
