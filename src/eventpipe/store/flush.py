"""A backup's files put on the disk before it is recorded and answered.

Migrations 22 and 23 sync what the tables write: inserts, merges, mutations.
BACKUP writes its files through none of them, to the page cache: a filesystem
failed right after a backup answered left all 67 files of it empty, so the
catalog listed a backup that no restore could read (the list then leaves it
out, saying it cannot be read). A restore's parts held in the same test.

SYSTEM SYNC FILE CACHE has ClickHouse call sync(2): every dirty page of the
host, which right after a backup is mostly the backup's own. It needs the
privilege of that name, granted to the user that takes backups
(clickhouse/users.d/eventpipe.xml).
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified

SYNC = "SYSTEM SYNC FILE CACHE"


def flush(client: Client) -> None:
    """Return once every file ClickHouse has written is on the disk; a StorageError if it cannot say so."""
    with classified():
        client.command(SYNC)
