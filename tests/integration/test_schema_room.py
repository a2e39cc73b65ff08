"""A migration whose own writes (a projection's build, a table's copy) leave the data disk short stops before it
changes a table's definition: on a full disk chDB wrote `events.sql` empty, and the store never opened again."""

from __future__ import annotations

from typing import Any

import pytest

from eventpipe.errors import HaltStorageError
from eventpipe.store import disk, migration
from eventpipe.store.client import connect
from eventpipe.store.migration import MIGRATIONS, upgrade

PROJECTIONS = "SELECT name FROM system.projections WHERE database = currentDatabase() AND table = 'events'"
ENGINE = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events_by_user'"


@pytest.mark.parametrize(
    ("version", "filling"),
    [(15, "ALTER TABLE events MATERIALIZE PROJECTION id_offsets"), (16, "INSERT INTO events_by_user_refill ")],
)
def test_a_migration_that_fills_the_disk_stops_before_its_next_definition_change(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch, version: int, filling: str
) -> None:
    client = connect(clickhouse_dsn)
    with monkeypatch.context() as earlier:  # the store as the version before left it
        earlier.setattr(migration, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version < version))
        upgrade(client)
    full = False
    command = client.command

    def filled_by(statement: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal full
        done = command(statement, *args, **kwargs)
        full = full or statement.startswith(filling)  # this write took the disk's last room
        return done

    monkeypatch.setattr(client, "command", filled_by)
    monkeypatch.setattr(disk, "short_of_room", lambda client, writes=0: 0 if full else None)
    projections = client.query(PROJECTIONS).result_rows
    engine = client.query(ENGINE).result_rows
    with pytest.raises(HaltStorageError, match="a schema change needs 32 MiB"):
        upgrade(client)
    # Without the check, migration 15 dropped by_id and migration 16 swapped events_by_user on the full disk.
    assert set(projections) <= set(client.query(PROJECTIONS).result_rows), "a projection was dropped on a full disk"
    assert client.query(ENGINE).result_rows == engine, "a table was swapped in on a full disk"
    assert version not in {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    full = False  # room made: a rerun finishes
    monkeypatch.setattr(client, "command", command)
    assert upgrade(client) == [m.version for m in MIGRATIONS if m.version >= version]
    assert client.query(PROJECTIONS).result_rows == [("id_offsets",)]
