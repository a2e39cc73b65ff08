"""A restore killed around its drop: migrate says what state it left, and which backup holds what was there."""

from __future__ import annotations

from typing import Any

import clickhouse_connect
import pytest

from eventpipe.errors import BackupError
from eventpipe.store.backup import Backups
from eventpipe.store.catalog import Backup
from eventpipe.store.migration import migrate
from tests.integration.test_backup import ids, seed


class Killed(BaseException):
    """SIGKILL, as far as the restore can tell: nothing after it runs."""


class KilledAtDrop:
    """The real client, but the process dies at its `drops`th DROP TABLE (a restore's drop of the store),
    or at its `drops`th statement starting with `at`."""

    def __init__(
        self,
        client: clickhouse_connect.driver.Client,
        drops: int,
        at: str = "DROP TABLE",
        stop: type[BaseException] = Killed,
    ) -> None:
        self._client, self._left, self._at, self._stop = client, drops, at, stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith(self._at):
            self._left -= 1
            if self._left == 0:
                raise self._stop
        return self._client.command(sql, *args, **kwargs)


def _interrupted(client: clickhouse_connect.driver.Client, drops: int) -> tuple[set[str], str]:
    """A store of 9 events, a backup of 4 of them, and a restore of it killed at its `drops`th DROP."""
    seed(client, "a", 4)
    taken = Backups(client).take("test")
    stored = seed(client, "a", 4) | seed(client, "b", 5)
    with pytest.raises(Killed):
        Backups(KilledAtDrop(client, drops)).restore(taken.name, 0, "test")  # type: ignore[arg-type]
    return stored, taken.name


def test_a_restore_killed_before_its_drop_leaves_a_store_that_starts(client: clickhouse_connect.driver.Client) -> None:
    stored, _ = _interrupted(client, drops=1)
    # It was refused as "half restored ... stopped after it dropped the tables", which was not so.
    assert migrate(client) == []
    assert set(ids(client)) == stored


def test_a_store_a_restore_left_half_dropped_is_refused_naming_the_backup_of_what_was_there(
    client: clickhouse_connect.driver.Client,
) -> None:
    stored, name = _interrupted(client, drops=2)
    [before] = [backup for backup in Backups(client).listing() if backup.events == len(stored)]
    with pytest.raises(BackupError, match=f"half restored.*--backup {name}.*--backup {before.name}") as refused:
        migrate(client)
    assert "before it" in str(refused.value)
    # Running it again finishes it; the backup named brings back what the store held before it.
    assert Backups(client).restore(name, 0, "test").events == 4
    assert Backups(client).restore(before.name, 0, "test").events == len(stored)
    assert migrate(client) == [] and set(ids(client)) == stored


def test_a_half_restored_store_stays_refused_after_a_second_restore_killed_before_its_drop(
    client: clickhouse_connect.driver.Client,
) -> None:
    seed(client, "a", 4)
    name = Backups(client).take("test").name
    seed(client, "b", 5)
    # Killed while it rebuilt the derived tables: every table there again, the ledger among them.
    with pytest.raises(Killed):
        Backups(KilledAtDrop(client, 1, at="TRUNCATE TABLE")).restore(name, 0, "test")  # type: ignore[arg-type]
    with pytest.raises(BackupError, match="half restored"):
        migrate(client)
    # Run again as the refusal says, and killed again before its drop: its mark said "nothing dropped", so
    # migrate let the half-restored store start (an attack saw users' pages answer 0 events on it).
    with pytest.raises(Killed):
        Backups(KilledAtDrop(client, 1)).restore(name, 0, "test")  # type: ignore[arg-type]
    with pytest.raises(BackupError, match="half restored"):
        migrate(client)
    assert Backups(client).restore(name, 0, "test").events == 4


def test_a_restore_names_what_it_replaces_before_its_drop_and_ctrl_c_after_it_says_the_store_is_incomplete(
    client: clickhouse_connect.driver.Client,
) -> None:
    seed(client, "a", 4)
    taken = Backups(client).take("test")
    stored = seed(client, "b", 5) | seed(client, "a", 4)
    said: list[Backup] = []
    # Ctrl-C once the drop had begun printed only "eventpipe restore: interrupted".
    with pytest.raises(
        KeyboardInterrupt, match=r"^the store is incomplete: run this restore again, or restore "
    ) as stop:
        interrupted = KilledAtDrop(client, 2, stop=KeyboardInterrupt)
        Backups(interrupted).restore(taken.name, 0, "test", said.append)  # type: ignore[arg-type]
    [before] = said  # told before the drop: a kill -9 after it leaves it on the screen
    assert before.events == len(stored) and str(stop.value).endswith(
        f"restore {before.name} (what the store held before)"
    )
    # Run again, it no longer named that backup (it takes none of a half-restored store).
    again: list[Backup] = []
    restored = Backups(client).restore(taken.name, 0, "test", again.append)
    assert [backup.name for backup in again] == [before.name] and restored.replaced == before
    assert Backups(client).restore(before.name, 0, "test").events == len(stored)


def test_a_restore_of_another_backup_killed_on_a_half_restored_store_still_names_what_was_there(
    client: clickhouse_connect.driver.Client,
) -> None:
    seed(client, "a", 4)
    first = Backups(client).take("test").name
    seed(client, "b", 5)
    other = Backups(client).take("test").name
    said: list[Backup] = []
    with pytest.raises(Killed):
        Backups(KilledAtDrop(client, 2)).restore(first, 0, "test", said.append)  # type: ignore[arg-type]
    [before] = said
    # Another restore, killed past its drop too: the refusal named no backup of what the store held.
    with pytest.raises(Killed):
        Backups(KilledAtDrop(client, 2)).restore(other, 0, "test")  # type: ignore[arg-type]
    with pytest.raises(BackupError, match=f"half restored.*--backup {other}.*--backup {before.name}"):
        migrate(client)
