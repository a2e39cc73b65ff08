"""The workers' marks as the store's readers take them: the instant before which every live worker
has committed everything it received (ingest.mark writes them; the arrival feed's complete_until and
an erasure's wait for in-flight batches read them); and the dead-letter replays running."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from eventpipe.store.query import Query

# The newest mark of each worker, and the server's clock for workers that have none yet.
MARKS_QUERY = Query(
    "SELECT toUnixTimestamp64Milli(now64(3)), groupArray((complete_before, retired)) FROM"
    " (SELECT argMax(complete_before, written) AS complete_before, argMax(retired, written) AS retired"
    " FROM worker_marks GROUP BY worker)",
    {},
)


# The newest mark under a name, when and its complete_before (ingest.mark's session marks): read at a start.
LAST_MARK = (
    "SELECT max(written), argMax(complete_before, written), count() FROM worker_marks WHERE worker = {worker:String}"
)


def complete_before(marks: Sequence[object]) -> int:
    """From MARKS_QUERY's row: the instant before which every live worker committed all it received."""
    now_ms, newest = marks
    before = int(str(now_ms))
    for committed, retired in newest:  # type: ignore[attr-defined]
        if not int(str(retired)):
            before = min(before, int(str(committed)))
    return before


# A dead-letter replay stores events received long before it runs, so an erasure that has deleted the user's
# letters waits for every replay that may have read them before (store.erasure): one in another API process
# stored an erased user's events after the erasure answered complete (found by an attack: 4 of 10 runs with
# two API processes). A replay marks itself among the workers, under this prefix, before it reads a letter
# and after each chunk, and retires when it ends. Its complete_before is past any instant, so that neither the
# feed's complete_until nor an erasure's wait for the workers waits on it.
REPLAY_PREFIX = "replay:"
REPLAY_AHEAD = 2**62
# A replay whose process was killed never retires: it is waited for no longer than this after its last mark.
# Each chunk is a few statements, each bounded by the admin client's timeout (900 s).
REPLAY_STALE_MS = 30 * 60 * 1000
# Each worker's (and replay's) newest state: whether it retired, and when it last marked itself; by worker.
_NEWEST = "SELECT worker, argMax(retired, written) AS ended, max(written) AS last FROM worker_marks"
RUNNING_REPLAYS = (
    f"SELECT worker FROM ({_NEWEST} WHERE startsWith(worker, {{prefix:String}}) GROUP BY worker)"  # noqa: S608 - constants
    " WHERE NOT ended AND last > {since:Int64}"
)


# This process among those that mark replays: chDB lets one process open a store, so on the embedded
# engine a replay marked by any other process has ended with it (store.erasure).
PROCESS = secrets.token_hex(8)


def replay_name(token: str) -> str:
    """A replay's name among the marks: its own token, and this process's."""
    return f"{REPLAY_PREFIX}{token}@{PROCESS}"


def running_replays(client: Client, this_process_only: bool = False) -> set[str]:
    """The replays that have marked themselves running within REPLAY_STALE_MS; `this_process_only`: of
    them, those this process runs (on the embedded engine, no other can be: see PROCESS)."""
    parameters = {"prefix": REPLAY_PREFIX, "since": time.time_ns() // 1_000_000 - REPLAY_STALE_MS}
    names = {str(row[0]) for row in client.query(RUNNING_REPLAYS, parameters=parameters).result_rows}
    return {name for name in names if name.endswith(f"@{PROCESS}")} if this_process_only else names


# Every worker (and replay) the restored marks hold as running, retired: the stack is stopped during a
# restore, and each worker that comes back marks itself running again at its start. Kept running, one that
# never came back (scaled down, or named otherwise on a new host) held the feed's complete_until at its last
# mark for good, and every erasure answered incomplete. Stamped a millisecond after the
# worker's own last mark, not with the restoring machine's clock: one ahead of the workers' had a worker
# that came back count as retired until that clock's time, complete_until passing its batches in flight (a
# review). Session marks are retired already, and keep saying when each session was last held.
RETIRE_ALL = (
    "INSERT INTO worker_marks (worker, complete_before, retired, written)"  # noqa: S608 - constants
    f" SELECT worker, 0, 1, last + 1 FROM ({_NEWEST} GROUP BY worker) WHERE NOT ended"
)
# A worker marks itself every 2 s at most; a stopped one retires itself; one killed is taken for stopped once
# this has passed since its last mark. `up` holds its data dir's lock besides.
RUNNING_WITHIN_MS = 10_000
_RUNNING_WORKERS = (
    f"SELECT worker FROM ({_NEWEST} GROUP BY worker)"  # noqa: S608 - constants
    " WHERE NOT ended AND last > toUnixTimestamp64Milli(now64(3)) - {within:Int64} ORDER BY worker"
)
_MARKS_TABLE = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'worker_marks'"


def retire_all(client: Client) -> None:
    """Retire every worker and replay the marks hold as running (a restore's: store.backup)."""
    client.command(RETIRE_ALL)


def running_workers(client: Client, within_ms: int) -> list[str]:
    """The workers and replays that marked themselves running within `within_ms` (none before migration 14)."""
    if not int(client.query(_MARKS_TABLE).result_rows[0][0]):
        return []
    rows = client.query(_RUNNING_WORKERS, parameters={"within": within_ms}).result_rows
    return [str(row[0]) for row in rows]
