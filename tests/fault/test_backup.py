"""Backups that go wrong under the store: a server restart, a disk that takes a backup's bytes and loses them.
Each call ends with the reason, leaves nothing taking room, and the next one runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from eventpipe.errors import BackupError
from eventpipe.store import disk, job
from eventpipe.store.backup import Backups
from eventpipe.store.client import backup_dir, connect
from eventpipe.store.erasure import Eraser
from eventpipe.store.migration import migrate
from eventpipe.store.turn import Turn
from eventpipe.store.writer import Writer
from tests.support.api import event
from tests.support.clickhouse_http import migrated
from tests.support.disk import full_filesystem
from tests.support.stack import run_eventpipe
from tests.support.wait import wait_until


@pytest.fixture
def client(clickhouse_dsn: str) -> Client:
    """A client on a migrated store holding 5 events."""
    client = connect(clickhouse_dsn)
    migrate(client)
    Writer(client).insert_events([event("events/t", {"event_id": f"e{i}"}, 1_772_323_200_000) for i in range(5)])
    return client


class Restarted:
    """The real client, whose system.backups answers empty, as a server's does after a restart (it keeps that
    table in memory only): the embedded engine cannot be restarted under a running BACKUP."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        if "FROM system.backups" in sql:
            return self._client.query("SELECT '', '' WHERE 0")
        return self._client.query(sql, parameters=parameters)


def test_a_backup_or_restore_the_server_forgot_fails_with_the_reason_and_blocks_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job, "MISSING_S", 1.0)
    turn = Turn()
    forgot = Backups(Restarted(client), turn)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(BackupError, match=r"gone from system\.backups, as after a ClickHouse restart"):
        forgot.take("test")  # waited for good before
    assert time.monotonic() - started < 30
    taken = Backups(client, turn).take("test")  # the turn it held is free: the next backup runs
    assert taken.events == 5
    with pytest.raises(BackupError, match="its outcome is unknown; run it again"):
        forgot.restore(taken.name, 0, "test")
    assert Backups(client, turn).restore(taken.name, 0, "test").events == 5


class Blinking:
    """The real client, whose polls of a job in system.backups fail as a timeout or a proxy's 502 does,
    `failures` in a row (all of them when None)."""

    def __init__(self, client: Client, failures: int | None) -> None:
        self._client, self._left = client, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        if sql == job.STATUS and (self._left is None or self._left > 0):
            self._left = None if self._left is None else self._left - 1
            raise OperationalError("HTTPConnectionPool(host='clickhouse', port=8123): Read timed out.")
        return self._client.query(sql, parameters=parameters)


def test_a_backup_or_restore_whose_progress_cannot_be_read_for_a_moment_is_waited_for_to_its_end(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One failed poll ended the wait while the job ran on: the backup's turn was freed under it, and a restore
    # was said incomplete, to be run again over the one still writing.
    taken = Backups(Blinking(client, 3)).take("test")  # type: ignore[arg-type]
    assert taken.events == 5
    assert Backups(Blinking(client, 3)).restore(taken.name, 0, "test").events == 5  # type: ignore[arg-type]
    # Polls that never come back end it, saying the job may still run.
    monkeypatch.setattr(job, "UNREADABLE_S", 1.0)
    with pytest.raises(BackupError, match=r"could not be followed for 1 s .*its outcome is unknown, and it may still"):
        Backups(Blinking(client, None)).take("test")  # type: ignore[arg-type]
    # It did run on: waited for here, so that the database is not dropped under it.
    running = "SELECT count() FROM system.backups WHERE status = 'CREATING_BACKUP'"
    wait_until(lambda: client.command(running) == 0, what="the backup left running")


class Emptied:
    """The real client, but a backup's `.backup` file is emptied before it is read back: what chDB left of a
    backup the disk had no room for, reported created (an attack saw 40-55 MB of it stay, the disk full,
    ingest halted, and the API answer "retry later")."""

    def __init__(self, client: Client, directory: Path) -> None:
        self._client, self._directory = client, directory

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def command(self, sql: str, **kwargs: Any) -> Any:
        if "ENGINE = Backup(" in sql:
            for written in self._directory.glob("*/.backup"):
                written.write_bytes(b"")
        return self._client.command(sql, **kwargs)


@pytest.mark.parametrize(
    ("faulty", "reason"),
    [
        (lambda client, directory: Emptied(client, directory), r"cannot be read: damaged or cut short .*"),
        # It was a 500 "storage_error", and the unlisted copy stayed on the backups disk taking the store's size.
        (lambda client, _directory: Unrecorded(client), r"could not be recorded \(.*not enough space.*\)"),
    ],
    ids=["not read back", "not recorded"],
)
def test_a_backup_that_cannot_be_read_back_or_recorded_is_removed_and_refused_with_the_reason(
    client: Client, clickhouse_dsn: str, faulty: Callable[[Client, Path], Any], reason: str
) -> None:
    directory = backup_dir(clickhouse_dsn) or pytest.skip("a server's backups disk is not on this machine")
    before = set(directory.glob("*"))
    with pytest.raises(BackupError, match=reason + r"; what it wrote \(.*\) was removed"):
        Backups(faulty(client, directory)).take("test")
    assert set(directory.glob("*")) == before, "nothing left taking room"
    assert Backups(client).listing() == []


def test_a_damaged_backup_is_left_out_of_the_list_and_its_restore_changes_nothing(
    client: Client, clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    backups = Backups(client)
    good, damaged = backups.take("test"), backups.take("test")
    directory = backup_dir(clickhouse_dsn) or pytest.skip("a server's backups disk is not on this machine")
    (directory / damaged.name / ".backup").write_bytes(b"")  # a copy back from off-site cut short
    # One damaged backup failed the whole list ("retry later"), and its restore printed ClickHouse's error.
    assert [listed.name for listed in backups.listing()] == [good.name]
    assert f"backup {damaged.name} is in the catalog but left out of the list" in caplog.text
    with pytest.raises(BackupError, match=r"cannot be read: damaged .*nothing was changed: restore another backup"):
        backups.restore(damaged.name, 0, "test")
    assert backups.restore(good.name, 0, "test").events == 5


def test_a_backup_its_disk_has_no_room_for_is_refused_before_anything_is_written(
    client: Client, clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This disk's room is what it is: the spare asked for is raised past it instead.
    monkeypatch.setattr(disk, "SPARE_BYTES", 1 << 60)
    directory = backup_dir(clickhouse_dsn)
    before = set(directory.glob("*")) if directory else set()
    with pytest.raises(
        BackupError, match=r"the backups disk has [0-9]+ MiB free, and a backup of this store needs"
    ) as refused:
        Backups(client).take("test")
    assert (set(directory.glob("*")) if directory else set()) == before and Backups(client).listing() == []
    # The spare is part of what is needed, said once: "80 MiB with 64 MiB to spare" had operators free 64 more.
    found = re.search(r"needs about (\d+) MiB: (\d+) MiB of copy, and (\d+) MiB to spare", str(refused.value))
    assert found is not None, str(refused.value)
    needed, copy, spare = (int(group) for group in found.groups())
    assert needed == copy + spare and spare == disk.SPARE_BYTES // disk.MIB


def test_a_backup_on_a_data_disk_too_full_to_purge_erasures_is_refused_before_any_mutation(
    client: Client, clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The purge of masked rows is a mutation on the data disk, which the backups disk's room said nothing of:
    # on a full one it waited or failed, and left an empty mutation file that stopped the next start.
    Writer(client).insert_events([event("events/t", {"event_id": "u", "user_id": "gone"}, 1_772_323_200_000)])
    Eraser(client).erase("gone")
    directory = backup_dir(clickhouse_dsn)
    before = set(directory.glob("*")) if directory else set()
    monkeypatch.setattr(disk, "MIN_FREE_BYTES", 1 << 60)  # this disk's room is what it is: the minimum is raised
    with pytest.raises(BackupError, match=r"data disk has [0-9]+ MiB free, and a backup first rewrites the parts"):
        Backups(client).take("test")
    purges = "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND command LIKE '%DELETED MASK%'"
    assert client.query(purges).result_rows == [(0,)], "no mutation was issued"
    assert (set(directory.glob("*")) if directory else set()) == before


class Unrecorded:
    """The real client, whose insert into the backups catalog fails as on a full data disk."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table == "backups":
            raise DatabaseError(
                "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"
            )
        return self._client.insert(table, *args, **kwargs)


TOO_MANY_QUERIES = (
    "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100. (TOO_MANY_SIMULTANEOUS_QUERIES)"
    " (version 26.3.1.1)"
)


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("late_error", {"runs_ms": 0, "message": TOO_MANY_QUERIES}),
        ("late_error", {"runs_ms": 600_000, "message": TOO_MANY_QUERIES}),
        ("page", {}),
    ],
    ids=["refused up front", "failed after its 200", "a proxy's page"],
)
def test_a_backup_whose_statement_the_server_refused_says_none_was_made(
    tmp_path: Path, mode: str, options: dict[str, Any]
) -> None:
    # It said "backup X was written but not read back: `eventpipe restore --backup X` still takes it", and
    # that restore then found no such backup: the refusal of BACKUP itself was taken for one of the read-back.
    with migrated(tmp_path / "clickhouse") as server:
        client = connect(server.dsn)
        Writer(client).insert_events([event("events/t", {"event_id": f"e{i}"}, 1_772_323_200_000) for i in range(5)])
        backups = Backups(client)
        server.fault(mode, match="BACKUP DATABASE", **options)
        with pytest.raises(BackupError, match=r"^backup \S+ was not made \(") as refused:
            backups.take("test")
        assert "restore" not in str(refused.value), refused.value
        assert backups.listing() == []
        assert not any((tmp_path / "clickhouse" / "backups").glob("*")), "nothing left on the backups disk"
        server.fault("ok")
        assert backups.take("test").events == 5  # the server's backups disk, working once BACKUP is taken


# Run in a child, on the tmpfs: chDB opens one engine path per process. Erases a user whose rows are in parts
# of every table, then leaves free what the store's copy and the spare need, and half of what the purge rewrites.
ERASED_THEN_BACKED_UP = """
import json, os, sys
from pathlib import Path
from eventpipe.store.dsn import embedded_dsn
from eventpipe.errors import BackupError
from eventpipe.store import disk
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.erasure import Eraser
from eventpipe.store.migration import KEPT

data_dir = Path(sys.argv[1])
client = connect(embedded_dsn(data_dir))
for user in ("user-00000", "user-00001"):
    Eraser(client).erase(user)
held = {"db": client.command("SELECT currentDatabase()"), "kept": list(KEPT)}
store = int(client.query(disk.STORE_BYTES, parameters=held).result_rows[0][0])
masked = "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND has_lightweight_delete"
rewrites = int(client.query(masked).result_rows[0][0])
ballast = os.statvfs(data_dir).f_bavail * os.statvfs(data_dir).f_frsize - (store + disk.SPARE_BYTES + rewrites // 2)
with open(data_dir.parent / "ballast", "wb") as out:
    out.truncate(ballast)
    os.posix_fallocate(out.fileno(), 0, ballast)
try:
    outcome = repr(Backups(client).take("test"))
except BackupError as exc:
    outcome = str(exc)
purges = "SELECT count() FROM system.mutations WHERE command LIKE '%DELETED MASK%'"
print(json.dumps({"rewrites": rewrites, "outcome": outcome, "purges": client.query(purges).result_rows[0][0]}))
"""


def test_a_backup_after_an_erasure_that_would_fill_the_disk_it_shares_with_the_data_is_refused_first(
    tmp_path: Path,
) -> None:
    # Natively backups and data are one filesystem: the purge's rewrite of every masked part (the old ones stay
    # minutes) and the backup's copy add up there. Each passed its own check, the disk filled, ingest failed.
    with full_filesystem(tmp_path / "small", size="200m", filled=False) as mount:
        data_dir = mount / "data"
        filled = run_eventpipe("bench", "fill", "--data-dir", str(data_dir), "--count", "200000")
        assert filled.returncode == 0, filled.stderr
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", ERASED_THEN_BACKED_UP, str(data_dir)],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.splitlines()[-1])
        assert seen["rewrites"] > 4 << 20, seen  # the spread the free room is set between
        assert re.search(r"the backups disk has \d+ MiB free, .* MiB of it the purge of erased rows", seen["outcome"])
        assert seen["purges"] == 0, "refused before any mutation"
        assert not [path for path in (data_dir / "backups").glob("*")], "nothing written on the backups disk"
