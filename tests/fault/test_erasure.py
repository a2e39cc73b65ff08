"""An erasure ClickHouse cannot apply (a full disk, found by an attack) answers at once with the reason."""

from __future__ import annotations

import time

from eventpipe.store.client import connect
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
