"""The copy of a backup a restore killed during its rehearsal leaves: dropped by the next migration and restore."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import clickhouse_connect
import pytest

from eventpipe.store.backup import Backups
from eventpipe.store.migration import migrate
from tests.integration.test_backup import seed

# Of the prefix, not of the names the code makes: never dropped.
FOREIGN = ("eventpipe_backup_mine", "eventpipe_backup_0123456789abcdef")


@pytest.fixture
def foreign(client: clickhouse_connect.driver.Client) -> Iterator[None]:
    for name in FOREIGN:
        client.command(f"CREATE DATABASE IF NOT EXISTS {name}")
    yield
    for name in FOREIGN:
        client.command(f"DROP DATABASE IF EXISTS {name}")


def _left_behind(client: clickhouse_connect.driver.Client) -> str:
    """What a restore killed between its rehearsal's RESTORE and its DROP leaves: the backup's rows."""
    name = f"eventpipe_backup_{secrets.token_hex(6)}"  # as store.scratch names them
    client.command(f"CREATE DATABASE {name}")
    client.command(f"CREATE TABLE {name}.events (user_id String) ENGINE = MergeTree ORDER BY user_id")
    client.command(f"INSERT INTO {name}.events VALUES ('u7'), ('u8')")  # noqa: S608 - the test's own name
    return name


def _databases(client: clickhouse_connect.driver.Client) -> set[str]:
    return {row[0] for row in client.query("SELECT name FROM system.databases").result_rows}


@pytest.mark.usefixtures("foreign")
def test_migrate_drops_a_copy_a_killed_restore_left_and_nothing_else(
    client: clickhouse_connect.driver.Client,
) -> None:
    leftover = _left_behind(client)
    migrate(client)
    assert leftover not in _databases(client), "the copy survived the migration"
    assert set(FOREIGN) <= _databases(client), "a database the code did not make was dropped"


@pytest.mark.usefixtures("foreign")
def test_a_restore_drops_a_copy_an_earlier_killed_one_left(client: clickhouse_connect.driver.Client) -> None:
    seed(client, "a", 4)
    backups = Backups(client)
    taken = backups.take("test")
    leftover = _left_behind(client)
    assert backups.restore(taken.name, 0, "test").events == 4
    assert leftover not in _databases(client), "the copy survived the restore"
    assert set(FOREIGN) <= _databases(client)
