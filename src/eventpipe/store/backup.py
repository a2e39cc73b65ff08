"""Backups and restores with ClickHouse's own BACKUP and RESTORE, on the disk named `backups`.

A server declares that disk in clickhouse/config.d (compose puts it on a
volume of its own); the embedded engine gets it from its startup options, in
`backups/` beside its directory (store.client). The statements are the same.

A backup is `BACKUP DATABASE` of everything but migration.KEPT, taken while
ingest runs. ClickHouse takes each table's parts when it reaches that table:
every table is consistent in itself (a part is immutable, and an insert's part
is in or out whole), but the tables are not frozen at one instant, so a batch
landing meanwhile can be in `events` and not in `events_by_user`. migration.SOURCE,
DERIVED and KEPT say what that means for each table, and a restore rebuilds
the derived ones from the restored events so that they agree again.

What a backup holds is read back from the backup itself, attached read-only
(store.attachment), never counted on the live tables that ingest keeps changing.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError, EventpipeError, HaltStorageError
from eventpipe.store import job
from eventpipe.store.attachment import HELD, counted, held, opened, present
from eventpipe.store.catalog import RECORDED, Backup, cut, recorded_query
from eventpipe.store.disk import discard, room_for_backup, room_for_rehearsal
from eventpipe.store.failure import classified
from eventpipe.store.flush import SYNC, flush
from eventpipe.store.integrity import masked_bytes, ours, purge, rehearse, verify
from eventpipe.store.lineage import RECORDED_SO_FAR
from eventpipe.store.mark import RUNNING_WITHIN_MS, retire_all, running_workers
from eventpipe.store.migration import DERIVED, KEPT, SOURCE, keep_up, upgrade
from eventpipe.store.naming import check_name, new_name, on_disk
from eventpipe.store.numbering import renumber
from eventpipe.store.page import Position
from eventpipe.store.query import quoted
from eventpipe.store.redo import Redone, left_to_redo
from eventpipe.store.restoration import drop_all, mark, record_restore, taken_before, unfinished_restore
from eventpipe.store.scratch import drop_leftovers, new_scratch
from eventpipe.store.turn import Turn

log = logging.getLogger(__name__)


class Restored(NamedTuple):
    """What a restore brought back, counted on the restored store; and the backup of what it replaced."""

    name: str
    events: int
    dead_letters: int
    replaced: Backup | None
    # Erasures the audit records since the backup was taken: their users' events may be back. None: the
    # count failed, after the restore was done.
    erased_since: int | None = 0
    # Users erased before the backup was taken that it holds again, brought back by a restore before it was
    # taken and not erased again since (store.lineage), and the time the oldest such erasure goes back to.
    returned: int | None = 0
    returned_since_ms: int = 0
    # The oldest time the audit gives those erasures (erased_since): those it lists from then on include
    # them. Before the backup's own time where a clock was set wrong when either was recorded.
    erased_since_ms: int = 0
    # What the restore's `redo` did before it finished, None without one.
    redone: Redone | None = None


class Backups:
    """Takes, lists and restores backups of the client's database; one operation at a time per process."""

    def __init__(self, client: Client, turn: Turn | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self._client = client
        # What names and dates a backup, in ns (a test steps it as NTP would): nothing orders by it since
        # migration 24 (store.lineage).
        self._clock = clock
        # Shared with erasures where both run (api.maintenance.Admin.writing): an erasure between
        # the purge and BACKUP would put the rows it masks into the backup.
        self._turn = turn or Turn()

    def take(self, taken_by: str) -> Backup:
        """A backup of everything but migration.KEPT, recorded in the catalog, with what it holds."""
        with self._turn.taken("a backup"):
            return self._take(taken_by)

    def listing(self) -> list[Backup]:
        """Every recorded backup still on the disk, newest first."""
        return self.page(None)[0]

    def page(self, limit: int | None, after: Position | None = None) -> tuple[list[Backup], Position | None]:
        """Up to `limit` recorded backups after `after` (all with None), newest first, those still on the disk,
        and where the next page starts. A backup removed from the disk is left out, so a page may be short:
        each one is looked for on the disk, which is what a list without a limit made grow with every backup."""
        query = recorded_query(limit, after)
        with self._turn.taken("a listing of the backups"):
            found, resume = cut([Backup(*row) for row in self._rows(query.sql, query.parameters)], limit)
            database = self._rows("SELECT currentDatabase()")[0][0]
            # One damaged backup is left out, not the whole list failed with it.
            return [backup for backup in found if present(self._client, backup.name, database)], resume

    def restore(
        self,
        name: str,
        retention_days: int,
        taken_by: str,
        replacing: Callable[[Backup], None] | None = None,
        redo: Callable[[int], Redone] | None = None,
    ) -> Restored:
        """Replace every table but migration.KEPT with the backup's, migrate, rebuild migration.DERIVED.

        The stack must be stopped: an insert during the restore would be lost
        or half-derived. What the store held before is backed up first (unless
        empty), so a restore is undone by restoring that backup, which is given
        to `replacing` before the drop; a failure before the drop changes
        nothing, and after it, running the restore again finishes it. `redo`
        erases again who was erased since the backup (store.redo), numbering its
        erasures from the ordinal it is given on: once the store is whole, before
        the restore is recorded as finished, so a restore killed meanwhile is
        one to run again, and nothing starts on its store.
        """
        check_name(name)
        with self._turn.taken("a restore"):
            database = self._rows("SELECT currentDatabase()")[0][0]
            drop_leftovers(self._client)
            try:
                # Attached once: a missing or foreign backup is refused before anything changes, and one
                # that cannot be read back whole.
                with opened(self._client, name, database) as attached:
                    ours(self._client, attached, name, database)
                    counted(self._client, name, database, attached)
                    verify(self._client, attached, name)
                    room_for_rehearsal(self._client, attached)
                # Or not restored whole: the same RESTORE, into a scratch database first.
                scratch = new_scratch()
                rehearse(self._client, _restoring(database, name, scratch), scratch, name)
            except BackupError as exc:
                text = str(exc)
                raise BackupError(
                    text if "nothing was changed" in text else f"{text}; nothing was changed: restore another backup"
                ) from exc
            self._refuse_running()
            # Onto an empty server, the catalog starts here; onto an older store, the backup's ledger
            # may list the migrations that added their columns: added now, as it will not run them.
            keep_up(self._client)
            # A store a restore left half done is no state to come back to: no backup of it, but the one
            # taken before that restore's first attempt still is.
            half = unfinished_restore(self._client)
            if half is None:
                replaced = self._take(taken_before(taken_by, name)) if self._holds_data() else None
            else:
                replaced = self._recorded(half.before) if half.before else None
            # Said before the drop: a restore killed past it can say nothing more.
            if replaced is not None and replacing is not None:
                replacing(replaced)
            # A row before the drop, whose id is the ledger's mark (store.restoration); and one once rebuilt,
            # whose id is the store's new generation (store.feed.GENERATION), so no token issued before or
            # during the restore is of the final one.
            started = secrets.randbits(62) + 1
            if half is None:
                # Not on a store already half restored: its mark would say nothing had been dropped.
                mark(self._client, started)
            record_restore(self._client, name, taken_by, False, started, 0)
            before = f", or restore {replaced.name} (what the store held before)" if replaced else ""
            incomplete = f"the store is incomplete: run this restore again{before}"
            try:
                drop_all(self._client, database, list(KEPT))
                job.run(self._client, _restoring(database, name))
                # Before any delete or migration is asked of the restored parts.
                renumber(self._client, list(SOURCE))
                with classified():
                    upgrade(self._client, retention_days)
                    retire_all(self._client)
                    for table, rows in DERIVED.items():
                        self._client.command(f"TRUNCATE TABLE {quoted(table)}")
                        self._client.command(f"INSERT INTO {quoted(table)} {rows}")
                # Its place in the audit's order is taken now, and its redo's erasures come after it.
                ordinal = int(str(self._rows(f"SELECT {RECORDED_SO_FAR} + 1")[0][0]))
                redone = redo(ordinal + 1) if redo is not None else None
                record_restore(self._client, name, taken_by, True, secrets.randbits(62) + 1, ordinal)
            except EventpipeError as exc:
                raise BackupError(f"{exc}; {incomplete}") from exc
            except KeyboardInterrupt as exc:
                # Ctrl-C once the drop has begun: not a bare "interrupted", the store is not as it was.
                raise KeyboardInterrupt(incomplete) from exc
            events, dead_letters = (self._rows(query.format(db=quoted(database)))[0][0] for query in HELD)
            erased, erased_ms, back, since = left_to_redo(self._client, name)
            return Restored(name, events, dead_letters, replaced, erased, back, since, erased_ms, redone)

    def _refuse_running(self) -> None:
        """Refuse (BackupError) while a worker or a replay has marked itself running a moment ago: a restore
        then would lose their inserts, and retire them while they run (store.mark.retire_all)."""
        with classified():
            running = running_workers(self._client, RUNNING_WITHIN_MS)
        if running:
            shown = ", ".join(running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")
            raise BackupError(
                f"{shown} marked themselves running within the last {RUNNING_WITHIN_MS // 1000} s: stop the "
                "workers and the API first (docker compose stop ingest-worker api; a killed one is let be "
                f"{RUNNING_WITHIN_MS // 1000} s after its last mark); nothing was changed"
            )

    def _recorded(self, name: str) -> Backup | None:
        """Backup `name` as the catalog records it, if it does."""
        rows = self._rows(f"{RECORDED} WHERE name = {{n:String}}", {"n": name})
        return Backup(*rows[0]) if rows else None

    def _take(self, taken_by: str) -> Backup:
        now_ms = self._clock() // 1_000_000
        name = new_name(now_ms)
        database = self._rows("SELECT currentDatabase()")[0][0]
        # Before BACKUP begins: every erasure recorded by now had its deletes done before (store.lineage), and
        # those recorded later are counted as after it by a restore, whatever the clocks said.
        ordinal_before = int(str(self._rows(f"SELECT {RECORDED_SO_FAR}")[0][0]))
        kept = ", ".join(f"{quoted(database)}.{quoted(table)}" for table in KEPT)
        room_for_backup(self._client, database, list(KEPT), masked_bytes(self._client, list(KEPT)))
        purge(self._client, database, list(KEPT))
        try:
            backup_id = job.start(
                self._client, f"BACKUP DATABASE {quoted(database)} EXCEPT TABLES {kept} TO {on_disk(name)}"
            )
        except EventpipeError as exc:
            # Refused before it began (too many queries, a failure written after its 200, a proxy's page):
            # there is no backup to restore, whatever the statement may have left on the disk.
            raise BackupError(f"backup {name} was not made ({exc}){discard(self._client, name)}") from exc
        try:
            size = job.wait(self._client, backup_id, "BACKUP")
            try:
                flush(self._client)
            except EventpipeError as exc:
                # Not on the disk, a host crash could leave it empty while the catalog lists it. A refusal for
                # good is the grant (a users file from before it); anything else passes: take it again.
                remedy = (
                    f"the user that takes backups needs the privilege to run {SYNC} (clickhouse/users.d/eventpipe.xml)"
                    if isinstance(exc, HaltStorageError)
                    else "take the backup again"
                )
                raise BackupError(f"it was written but not put on the disk ({exc}); {remedy}") from exc
            # Read back before it is recorded: on a full disk chDB reported one created whose `.backup` was empty.
            events, dead_letters = held(self._client, name, database)
        except BackupError as exc:
            # It failed, or what it wrote cannot be read: removed, or it holds room for nothing.
            raise BackupError(f"backup {name} failed: {exc}{discard(self._client, name)}") from exc
        except EventpipeError as exc:
            # A passing failure (a timeout, memory) while reading it back says nothing against the backup.
            raise BackupError(
                f"backup {name} was written but not read back ({exc}): it is not in the list; "
                f"`eventpipe restore --backup {name}` still takes it, or delete it from the backups disk"
            ) from exc
        taken = Backup(name, now_ms, events, dead_letters, size)
        at = datetime.fromtimestamp(now_ms / 1000, UTC)
        try:
            with classified():
                self._client.insert(
                    "backups",
                    [[name, at, events, dead_letters, taken.bytes, taken_by, ordinal_before]],
                    column_names=["name", "taken_at", "events", "dead_letters", "bytes", "taken_by", "ordinal_before"],
                )
        except EventpipeError as exc:
            # Not in the catalog, it is in no list (a full data disk refused the record): removed, not left
            # taking the store's size on the backups disk for nothing, and the reason is the client's.
            raise BackupError(f"backup {name} could not be recorded ({exc}){discard(self._client, name)}") from exc
        return taken

    def _holds_data(self) -> bool:
        sql = (
            "SELECT sum(total_rows) FROM system.tables WHERE database = currentDatabase()"
            " AND name IN {tables:Array(String)}"
        )
        # The ledger and the workers' marks are there as soon as a stack has started: not data.
        held = self._rows(
            sql, {"tables": [table for table in SOURCE if table not in ("schema_migrations", "worker_marks")]}
        )
        return bool(held and held[0][0])

    def _rows(self, sql: str, parameters: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        with classified():
            return self._client.query(sql, parameters=parameters).result_rows


def _restoring(database: str, name: str, into: str = "") -> str:
    """RESTORE of backup `name`'s `database`, into itself or, rehearsed, into the database `into`."""
    target = f" AS {quoted(into)}" if into else ""
    return f"RESTORE DATABASE {quoted(database)}{target} FROM {on_disk(name)} SETTINGS allow_different_database_def = 1"
