"""A store or a backup from a newer eventpipe than this one: refused, naming both versions, before anything changes."""

from __future__ import annotations

import clickhouse_connect
import pytest

from eventpipe.errors import BackupError, ConfigError
from eventpipe.store.backup import Backups
from eventpipe.store.migration import MIGRATIONS, migrate
from tests.integration.test_backup import ids, seed

NEWEST = MIGRATIONS[-1].version


def _from_the_future(client: clickhouse_connect.driver.Client) -> None:
    client.insert("schema_migrations", [[NEWEST + 1, "future"]], column_names=["version", "name"])


def test_migrate_refuses_a_store_a_newer_eventpipe_migrated(client: clickhouse_connect.driver.Client) -> None:
    _from_the_future(client)
    client.command("DROP TABLE restores")  # as a newer eventpipe might have it: left as it is
    # It said "schema is current" and exited 0; an older API then failed on tables it does not know.
    with pytest.raises(ConfigError, match=f"schema version {NEWEST + 1}, this eventpipe knows up to {NEWEST}: run"):
        migrate(client)
    # It made this version's bookkeeping tables first, and dropped what looked like leftovers of its restores.
    assert not client.query("EXISTS TABLE restores").result_rows[0][0], "the store was written to before the refusal"


def test_a_backup_of_a_newer_schema_is_refused_before_the_store_is_touched(
    client: clickhouse_connect.driver.Client,
) -> None:
    stored = seed(client, "a", 6)
    _from_the_future(client)
    taken = Backups(client).take("test")
    client.command("ALTER TABLE schema_migrations DELETE WHERE version > {v:UInt32}", parameters={"v": NEWEST})
    listed = Backups(client).listing()
    with pytest.raises(BackupError, match=f"schema version {NEWEST + 1}, this eventpipe knows up to {NEWEST}.*nothing"):
        Backups(client).restore(taken.name, 0, "test")
    assert set(ids(client)) == stored
    assert Backups(client).listing() == listed, "a backup of what it would replace was taken"
    assert migrate(client) == []
