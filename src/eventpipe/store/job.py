"""A BACKUP or RESTORE run in ClickHouse's background, waited for on system.backups.

ASYNC, so that one lasting longer than an HTTP read timeout still completes,
and its failure still reaches the caller with ClickHouse's reason.
"""

from __future__ import annotations

import time

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError, RetryableStorageError
from eventpipe.store.failure import classified, without_trace

POLL_S = 0.1
# Polls slow down to this while a long backup runs.
MAX_POLL_S = 1.0
# How long its row may be missing before a BACKUP or RESTORE is taken for lost with a restarted server.
MISSING_S = 10.0
# How long polls may fail in a row (a timeout, a proxy's 502) before the wait gives up. One failed poll
# ended it while the job ran on in the server: a backup's caller then freed the turn (an erasure could run
# under a backup still copying its rows), a restore's was told to run it again over the one still writing.
UNREADABLE_S = 300.0
STATUS = "SELECT status, error, total_size FROM system.backups WHERE id = {id:String}"


def run(client: Client, statement: str) -> int:
    """Run `statement` (BACKUP or RESTORE, built by store.backup) with ASYNC and wait for its end;
    the backup's size in bytes, as system.backups gives it with the final status."""
    return wait(client, start(client, statement), statement.split(" ", 1)[0])


def start(client: Client, statement: str) -> str:
    """Start `statement` with ASYNC; its id in system.backups. A failure here is the server's refusal (or a
    proxy's) of the statement itself: it did not begin, short of its answer lost on the way back."""
    with classified():
        return str(client.query(f"{statement} ASYNC").result_rows[0][0])


def wait(client: Client, backup_id: str, verb: str) -> int:
    """Wait for the BACKUP or RESTORE `backup_id` to end (as `run` does)."""
    missing_since = unreadable_since = None
    pause = 0.0  # the first poll at once, then POLL_S, slowing to MAX_POLL_S
    while True:
        time.sleep(pause)
        pause = min(max(pause * 1.25, POLL_S), MAX_POLL_S)
        try:
            with classified():
                rows = client.query(STATUS, parameters={"id": backup_id}).result_rows
        except RetryableStorageError as exc:
            unreadable_since = unreadable_since or time.monotonic()
            if time.monotonic() - unreadable_since > UNREADABLE_S:
                raise BackupError(
                    f"{verb} {backup_id} could not be followed for {UNREADABLE_S:.0f} s ({exc}): its outcome is "
                    f"unknown, and it may still run; see system.backups for id {backup_id} before running it again"
                ) from exc
            continue
        unreadable_since = None
        status, error, size = (str(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else ("", "", 0)
        if status in ("BACKUP_CREATED", "RESTORED"):
            return size
        if status.endswith(("FAILED", "CANCELLED")):
            reason = without_trace(error).strip().split("\n", 1)[0][:500]
            raise BackupError(f"{verb} failed: {reason or status}")
        if not rows:
            # system.backups lives in the server's memory: a restart empties it, and waiting on would
            # hang this call and every backup or restore after it (they queue on one lock).
            missing_since = missing_since or time.monotonic()
            if time.monotonic() - missing_since > MISSING_S:
                raise BackupError(
                    f"{verb} {backup_id} is gone from system.backups, as after a ClickHouse restart: "
                    "its outcome is unknown; run it again (a restore starts over, a backup takes a new name)"
                )
