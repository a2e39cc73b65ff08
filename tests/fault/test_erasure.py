"""An erasure ClickHouse cannot apply (a full disk, found by an attack) answers at once with the reason."""

from __future__ import annotations

import time

import pytest

from eventpipe.store import disk
from eventpipe.store.client import connect
from eventpipe.store.dsn import embedded
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import ADMIN, AUTH, admin_client, event

USER = "full-disk-user"


def test_an_erasure_clickhouse_cannot_apply_fails_with_its_reason_and_holds_nothing_up(clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    Writer(client).insert_events(
        [event("events/t", {"event_id": f"e{i}", "user_id": USER}, 1_772_323_200_000 + i) for i in range(20)]
    )
    # A table with a user column is erased too; this one's delete fails in ClickHouse's background mutation,
    # as every delete did on a full disk, where the erasure waited (11 minutes once) holding the admin lock.
    client.command(
        "CREATE TABLE trap (n UInt32, user_id String ALIAS toString(throwIf(n = 7, 'no space left on device')))"
        " ENGINE = MergeTree ORDER BY n"
    )
    client.command("INSERT INTO trap SELECT number FROM numbers(10)")
    api = admin_client(clickhouse_dsn)
    started = time.monotonic()
    refused = api.post("/admin/erase", json={"user_id": USER}, headers=ADMIN)
    assert time.monotonic() - started < 30, refused.text
    assert (refused.status_code, refused.json()["error"]) == (503, "busy"), refused.text
    assert "no space left on device" in refused.json()["detail"] and "erase again" in refused.json()["detail"]
    assert api.post("/admin/dead-letters/replay", headers=ADMIN).status_code == 200, "the admin lock is free"

    client.command("DROP TABLE trap SYNC")  # the cause gone
    done = api.post("/admin/erase", json={"user_id": USER}, headers=ADMIN)
    assert done.status_code == 200, done.text
    assert api.get("/events", params={"user_id": USER}, headers=AUTH).json()["items"] == []


def test_an_erasure_on_a_full_data_disk_is_refused_before_any_delete(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a full disk a delete's mutation waited for room with no reason given, and the empty mutation file
    # it left stopped the next start (docs/runbooks.md, ClickHouseDiskFull). This disk's room is what it
    # is: the minimum asked for is raised past it instead.
    client = connect(clickhouse_dsn)
    migrate(client)
    Writer(client).insert_events([event("events/t", {"event_id": "e1", "user_id": USER}, 1_772_323_200_000)])
    monkeypatch.setattr(disk, "MIN_FREE_BYTES", 1 << 60)
    api = admin_client(clickhouse_dsn)
    refused = api.post("/admin/erase", json={"user_id": USER}, headers=ADMIN)
    assert (refused.status_code, refused.json()["error"]) == (503, "busy"), refused.text
    assert "data disk has" in refused.json()["detail"]
    assert len(api.get("/events", params={"user_id": USER}, headers=AUTH).json()["items"]) == 1
    deletes = "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND command LIKE '%_row_exists%'"
    assert client.query(deletes).result_rows == [(0,)], "no delete was issued"


def test_an_erasure_held_up_by_an_older_failing_mutation_names_it(clickhouse_dsn: str) -> None:
    # ClickHouse applies a table's mutations in order: one failing from before (an ALTER by hand) holds the
    # erasure's up for good. Said as that, not as the erasure's own failure.
    client = connect(clickhouse_dsn)
    migrate(client)
    Writer(client).insert_events([event("events/t", {"event_id": "e1", "user_id": USER}, 1_772_323_200_000)])
    client.command("CREATE TABLE other (n UInt32, user_id String) ENGINE = MergeTree ORDER BY n")
    client.command("INSERT INTO other SELECT number, {user:String} FROM numbers(10)", parameters={"user": USER})
    client.command(
        "ALTER TABLE other DELETE WHERE throwIf(n = 7, 'a mutation by hand') = 0",
        settings={"mutations_sync": 0},
    )
    api = admin_client(clickhouse_dsn)
    refused = api.post("/admin/erase", json={"user_id": USER}, headers=ADMIN)
    assert (refused.status_code, refused.json()["error"]) == (503, "busy"), refused.text
    assert "waits behind the older mutation" in refused.json()["detail"], refused.text
    assert "a mutation by hand" in refused.json()["detail"]


def test_a_failed_erasure_keeps_the_id_its_deletes_read_until_no_other_call_can_run_them(
    clickhouse_dsn: str,
) -> None:
    # An erasure's deletes read the id from erasure_keys (store.concealment) as ClickHouse applies them, part by
    # part: one left running by a failed call must still find it, or it would delete nothing and be done.
    client = connect(clickhouse_dsn)
    migrate(client)
    client.command(
        "CREATE TABLE trap (n UInt32, user_id String ALIAS toString(throwIf(n = 7, 'no space left on device')))"
        " ENGINE = MergeTree ORDER BY n"
    )
    client.command("INSERT INTO trap SELECT number FROM numbers(10)")
    api = admin_client(clickhouse_dsn)
    assert api.post("/admin/erase", json={"user_id": USER}, headers=ADMIN).status_code == 503
    hidden = "SELECT count() FROM erasure_keys WHERE name = 'users' AND has(texts, {u:String})"
    assert client.query(hidden, parameters={"u": USER}).result_rows == [(1,)], "kept while its delete runs"

    client.command("DROP TABLE trap SYNC")
    assert api.post("/admin/erase", json={"user_id": USER}, headers=ADMIN).status_code == 200
    if embedded(clickhouse_dsn):
        # One process, whose calls take turns: with no delete of the failed call left running, its row goes
        # with the next erasure's own.
        assert client.query(hidden, parameters={"u": USER}).result_rows == [(0,)], "every call's row is gone"
    else:
        # Its own row gone; the failed call's kept, as that call might still run in another API process.
        assert client.query(hidden, parameters={"u": USER}).result_rows == [(1,)]
        # A day on, it can run no more: the next erasure, of anyone, removes its row. Of the same user only,
        # the id stayed for good when no one asked to erase that user again.
        client.command(
            "ALTER TABLE erasure_keys UPDATE cut_at = cut_at - INTERVAL 2 DAY WHERE 1 SETTINGS mutations_sync = 2"
        )
        assert api.post("/admin/erase", json={"user_id": "someone.else"}, headers=ADMIN).status_code == 200
        assert client.query(hidden, parameters={"u": USER}).result_rows == [(0,)], "every call's row is gone"
    logged = (
        "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND position(command, {u:String}) > 0"
    )
    assert client.query(logged, parameters={"u": USER}).result_rows == [(0,)]
