"""Whether a restore stopped half way, and what to tell the operator about it.

A restore (store.backup) records itself (a `restores` row, not finished), drops the tables, RESTOREs
and rebuilds, then records itself finished. Killed between its first row and its drop, it left an intact
store that `migrate` refused as "half restored ... stopped after it dropped the tables" (found by an
attack). So before that row it marks the ledger with its id (`mark`), and drops the ledger before any
other table: a ledger still carrying the newest unfinished restore's id means nothing was dropped."""

from __future__ import annotations

from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.query import quoted
from eventpipe.store.schema.record import NEWEST

LEDGER = "schema_migrations"
MARK = "restore {id} has not dropped this ledger yet"
NEWEST_RESTORE = f"SELECT backup, restore_id, finished FROM restores ORDER BY {NEWEST} DESC LIMIT 1"  # noqa: S608
# The backup a restore took of what it replaced is recorded as taken "... before restoring NAME"; the
# newest since the last finished restore, whatever backup it names, is the one of the store as it was before
# the attempts since: a rerun, or a restore of another backup, on a half restored store takes none.
BEFORE = " before restoring {name}"
SAFETY = (
    "SELECT name FROM backups FINAL WHERE position(taken_by, {infix:String}) > 0"
    " AND taken_at > (SELECT max(restored_at) FROM restores WHERE finished) ORDER BY taken_at DESC LIMIT 1"
)
# A row of `restores`, at the server's time, with its place in the audit's order (store.lineage): only a
# finished row's is read. The stack is stopped: the only erasures during a restore are its redo's, which
# come after it (store.backup).
RECORD_RESTORE = (
    "INSERT INTO restores (restored_at, backup, taken_by, restore_id, finished, ordinal)"
    " SELECT now64(3, 'UTC'), {backup:String}, {by:String}, {id:UInt64}, {finished:UInt8}, {ordinal:UInt64}"
)
EXISTS = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}"
LEDGER_COMMENT = "SELECT comment FROM system.tables WHERE database = currentDatabase() AND name = {t:String}"


class Half(NamedTuple):
    """A restore that stopped after its drop began: the backup it was bringing back, and the backup it took
    of what the store held before, if it took one."""

    backup: str
    before: str | None

    def advice(self, again: str = "run it again") -> str:
        """What to do, with the commands."""
        undo = (
            f", or bring back what the store held before it (`eventpipe restore --data-dir DIR --backup {self.before}`)"
            if self.before
            else ""
        )
        return (
            f"{again} (`eventpipe restore --data-dir DIR --backup {self.backup}`, or `--clickhouse-dsn` for a server)"
            f"{undo}, or restore another backup"
        )


def taken_before(taken_by: str, name: str) -> str:
    """How the backup of what a restore of `name` replaces is recorded as taken."""
    return taken_by + BEFORE.format(name=name)


def record_restore(client: Client, name: str, taken_by: str, finished: bool, restore_id: int, ordinal: int) -> None:
    """Start a new generation of the store (store.schema.record.RESTORES): a random id, never 0. At the
    server's time, not the restoring machine's; ordered against erasures by its ordinal (store.lineage),
    which only a finished row's is read for."""
    parameters = {"backup": name, "by": taken_by, "id": restore_id, "finished": int(finished), "ordinal": ordinal}
    with classified():
        client.command(RECORD_RESTORE, parameters=parameters)


def mark(client: Client, restore_id: int) -> None:
    """Mark the ledger as one restore `restore_id` has not dropped (before its first row is written)."""
    with classified():
        if int(client.query(EXISTS, parameters={"t": LEDGER}).result_rows[0][0]):
            client.command(f"ALTER TABLE {LEDGER} MODIFY COMMENT '{MARK.format(id=int(restore_id))}'")


def unfinished_restore(client: Client) -> Half | None:
    """The restore that stopped after its drop began, if the newest did; None if it never reached it."""
    with classified():
        if not int(client.query(EXISTS, parameters={"t": "restores"}).result_rows[0][0]):
            return None
        rows = client.query(NEWEST_RESTORE).result_rows
        if not rows or int(str(rows[0][2])):
            return None
        backup, restore_id = str(rows[0][0]), int(str(rows[0][1]))
        comment = client.query(LEDGER_COMMENT, parameters={"t": LEDGER}).result_rows
        if comment and str(comment[0][0]) == MARK.format(id=restore_id):
            return None  # killed before its drop: the store is as it was
        safety = client.query(SAFETY, parameters={"infix": BEFORE.format(name="")}).result_rows
        return Half(backup, str(safety[0][0]) if safety else None)


def drop_all(client: Client, database: str, kept: list[str]) -> None:
    """Drop every table and view of `database` but `kept`."""
    # The ledger first, so that one still there with its mark says nothing was dropped; then views,
    # so that no view is left writing into a table that is gone.
    sql = (
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND name NOT IN {kept:Array(String)}"
        " ORDER BY name != {ledger:String}, engine != 'MaterializedView'"
    )
    with classified():
        for (table,) in client.query(sql, parameters={"kept": kept, "ledger": LEDGER}).result_rows:
            client.command(f"DROP TABLE IF EXISTS {quoted(database)}.{quoted(table)} SYNC")
