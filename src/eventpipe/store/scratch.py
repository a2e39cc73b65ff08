"""The scratch databases a backup is read in (attached) and a restore rehearsed in (a full copy), and
the copies a killed restore leaves behind.

A restore killed during its rehearsal left `eventpipe_backup_<hex>` holding the whole backup for good:
it outlived migrations and later restores, and still held the rows of users erased since (found by an
attack). The next restore and every migration drop such copies (`drop_leftovers`)."""

from __future__ import annotations

import logging
import re
import secrets

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.query import quoted

# On a server the backup users may create and drop databases of this prefix only (users.d).
SCRATCH_PREFIX = "eventpipe_backup_"
# The names new_scratch() makes, and the only ones drop_leftovers() touches: never a database of the
# prefix someone else made.
SCRATCH = re.compile(re.escape(SCRATCH_PREFIX) + "[0-9a-f]{12}")
# A BACKUP or RESTORE under way may be writing into one of them (a rehearsal, or one a killed restore left
# running on a server): nothing is dropped until it ends.
BUSY = "SELECT count() FROM system.backups WHERE status IN ('CREATING_BACKUP', 'RESTORING')"
# Not the read-only attachments (engine Backup): they hold no rows of their own, and the API may be
# reading a backup through one right now (operations.md says how to drop one by hand).
COPIES = "SELECT name FROM system.databases WHERE startsWith(name, {p:String}) AND engine != 'Backup'"
log = logging.getLogger(__name__)


def new_scratch() -> str:
    """A database name of the prefix a backup is read or rehearsed under, new each time."""
    return f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"


def drop_leftovers(client: Client) -> list[str]:
    """Drop the rehearsal copies a killed restore left; return their names."""
    with classified():
        if any(int(row[0]) for row in client.query(BUSY).result_rows):
            log.info("a backup or restore is running: scratch databases left for the next migration")
            return []
        found = [str(name) for (name,) in client.query(COPIES, parameters={"p": SCRATCH_PREFIX}).result_rows]
        dropped = [name for name in found if SCRATCH.fullmatch(name)]
        for name in dropped:
            client.command(f"DROP DATABASE IF EXISTS {quoted(name)} SYNC")
            log.warning("dropped %s, a copy of a backup a killed restore left behind", name)
        return dropped
