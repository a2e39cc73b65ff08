"""Room on ClickHouse's disks, asked before writing: a write that fills a disk ClickHouse shares stops ingest,
and one that fills it mid-mutation can leave a file no restart reads (docs/runbooks.md, ClickHouseDiskFull)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError, BusyStorageError, HaltStorageError
from eventpipe.store.client import BACKUP_DISK
from eventpipe.store.failure import classified

MIB = 1024 * 1024
# What a backup must leave free on its disk beyond its own size.
SPARE_BYTES = 64 * MIB
# Below this free on the data disk a delete is postponed, not failed (no reason given: an attack saw it wait
# until its timeout), and its mutation file may be left empty, which stops the next start.
MIN_FREE_BYTES = 32 * MIB
# The filesystem's size, not the disk's: ClickHouse takes a disk's keep_free_space_bytes off its total_space,
# so one disk with that set looked like another filesystem than its neighbour.
FREE = "SELECT free_space, path, total_space + keep_free_space FROM system.disks WHERE name = {disk:String}"
STORE_BYTES = (
    "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = {db:String}"
    " AND table NOT IN {kept:Array(String)}"
)


class Disk(NamedTuple):
    free: int
    path: str
    total: int


def room_for_backup(client: Client, database: str, kept: list[str], rewrites: int = 0) -> None:
    """BackupError unless the backups disk holds a copy of the store's tables but `kept`, with SPARE_BYTES left,
    and the `rewrites` bytes the purge first writes on the data disk when that is the same filesystem."""
    free = _disk(client, BACKUP_DISK)
    with classified():
        size = int(client.query(STORE_BYTES, parameters={"db": database, "kept": kept}).result_rows[0][0] or 0)
    shared = same_filesystem(free, _disk(client, "default"))
    if short := _lacking(free, backup_needs(size, rewrites, shared)):
        purged = f", {rewrites // MIB} MiB of it the purge of erased rows" if shared and rewrites else ""
        raise BackupError(
            f"the backups disk has {short[0]} MiB free, and a backup of this store needs {_needed(short[1], purged)}"
            " (filling a disk ClickHouse shares stops ingest): free space or delete old backups (docs/operations.md,"
            " Backups and restore)"
        )


def backup_needs(store: int, rewrites: int, shared: bool) -> int:
    """Bytes a backup of a `store` of that many bytes takes on its disk. On the data disk's filesystem (the
    native stack) the purge's `rewrites` count too: its new parts and the old ones both stay there while the
    backup copies (ClickHouse removes the old minutes later), and an attack's backup filled that disk so."""
    return store + rewrites if shared else store


def same_filesystem(one: Disk | None, other: Disk | None) -> bool:
    """Whether two of ClickHouse's disks are one filesystem, as far as its answer shows: the same size (a
    server's paths are in its container, not here). Two filesystems of one size are taken as one: a backup
    then asks for more room than it needs, never less."""
    return one is not None and other is not None and one.total == other.total


def room_for_rehearsal(client: Client, attached: str) -> None:
    """BackupError unless the data disk holds a copy of the backup attached as database `attached`, with
    SPARE_BYTES left: a restore rehearses into one before it drops anything (store.integrity.rehearse)."""
    free = _disk(client, "default")
    with classified():
        rows = client.query(
            "SELECT sum(total_bytes) FROM system.tables WHERE database = {d:String}", parameters={"d": attached}
        ).result_rows
    size = int(rows[0][0] or 0) if rows else 0
    if short := _lacking(free, size):
        raise BackupError(
            f"ClickHouse's data disk has {short[0]} MiB free, and a restore first rehearses into a copy of the "
            f"backup, which needs {_needed(short[1])}: free space, then restore again; nothing was changed"
        )


def room_for_schema(client: Client) -> None:
    """HaltStorageError when the data disk has less than MIN_FREE_BYTES free: a schema change writes its
    table's definition again, and on a full disk chDB left that file empty, so the store never opened again
    (an attack's restart on a full disk did that to `restores`)."""
    if (free := short_of_room(client)) is not None:
        raise HaltStorageError(
            f"ClickHouse's data disk has {free // 1024} KiB free, and a schema change needs "
            f"{MIN_FREE_BYTES // MIB} MiB (on a full disk it can leave a table's definition empty): free space "
            "(old backups), then start again; that change was not begun"
        )


def room_for_delete(client: Client) -> None:
    """BusyStorageError when the data disk has less than MIN_FREE_BYTES free."""
    if (free := short_of_room(client)) is not None:
        raise BusyStorageError(
            f"ClickHouse's data disk has {free // 1024} KiB free: a delete writes to each table it touches and "
            "waits for room; free space (old backups, a retention), then erase again"
        )


def short_of_room(client: Client, writes: int = 0) -> int | None:
    """The bytes free on the data disk when fewer than a mutation writing `writes` bytes needs
    (MIN_FREE_BYTES beyond them); else None."""
    free = _disk(client, "default")
    return free.free if free is not None and free.free < writes + MIN_FREE_BYTES else None


def discard(client: Client, name: str) -> str:
    """Remove backup `name` from the backups disk where this process can reach it; what was done, said.
    `name` must be a fresh backup name: under the disk's path it is that backup's (chDB's disk is local)."""
    free = _disk(client, BACKUP_DISK)
    left = Path(free.path) / name if free is not None else None
    if left is not None and left.is_dir():
        shutil.rmtree(left, ignore_errors=True)
        if not left.exists():
            return f"; what it wrote ({left}) was removed"
        return f"; what it wrote ({left}) could not all be removed: delete it, or it takes room for nothing"
    return f"; delete {name} from the backups disk if it is there, or it takes room for nothing"


def _lacking(free: Disk | None, size: int) -> tuple[int, int] | None:
    """(MiB free, MiB needed) when a disk with `free` cannot take `size` bytes with SPARE_BYTES to spare."""
    if free is None or free.free >= size + SPARE_BYTES:
        return None
    return free.free // MIB, (size + SPARE_BYTES) // MIB


def _needed(mib: int, purged: str = "") -> str:
    """`mib` needed, _lacking's second, told apart: the spare is in it, said once (an operator freed it twice)."""
    return f"about {mib} MiB: {mib - SPARE_BYTES // MIB} MiB of copy{purged}, and {SPARE_BYTES // MIB} MiB to spare"


def _disk(client: Client, name: str) -> Disk | None:
    with classified():
        rows = client.query(FREE, parameters={"disk": name}).result_rows
    return Disk(int(str(rows[0][0])), str(rows[0][1]), int(str(rows[0][2]))) if rows else None
