"""A backup or restore whose server restarts under it: the call ends with the reason, the next one runs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError
from eventpipe.store import backup
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import event


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
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    Writer(client).insert_events([event("events/t", {"event_id": f"e{i}"}, 1_772_323_200_000) for i in range(5)])
    monkeypatch.setattr(backup, "MISSING_S", 1.0)
    lock = threading.Lock()
    forgot = Backups(Restarted(client), lock)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(BackupError, match=r"gone from system\.backups, as after a ClickHouse restart"):
        forgot.take("test")  # waited for good before
    assert time.monotonic() - started < 30
    taken = Backups(client, lock).take("test")  # the lock it held is free: the next backup runs
    assert taken.events == 5
    with pytest.raises(BackupError, match="its outcome is unknown; run it again"):
        forgot.restore(taken.name, 0, "test")
    assert Backups(client, lock).restore(taken.name, 0, "test").events == 5
