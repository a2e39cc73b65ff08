"""How much room a backup asks for, and when two of ClickHouse's disks are taken for one filesystem."""

from __future__ import annotations

from eventpipe.store.disk import Disk, backup_needs, same_filesystem

MIB = 1 << 20


def test_a_backup_beside_the_data_counts_what_the_purge_first_writes_there() -> None:
    # Natively both disks are one filesystem: the purge's new parts, the old ones not yet removed and the
    # backup's copy are there together (an attack's backup filled that disk so, and ingest failed).
    assert backup_needs(100 * MIB, 40 * MIB, shared=True) == 140 * MIB
    # A backups volume of its own takes the copy only; the data disk's room for the purge is asked apart.
    assert backup_needs(100 * MIB, 40 * MIB, shared=False) == 100 * MIB
    assert backup_needs(100 * MIB, 0, shared=True) == 100 * MIB


def test_disks_of_one_size_are_one_filesystem_and_an_unknown_disk_is_none() -> None:
    data = Disk(free=5 * MIB, path="/data/clickhouse/", total=1000 * MIB)
    assert same_filesystem(Disk(5 * MIB, "/data/backups/", 1000 * MIB), data)
    assert not same_filesystem(Disk(5 * MIB, "/backups/", 2000 * MIB), data)
    assert not same_filesystem(None, data)
