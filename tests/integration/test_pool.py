"""The API's reads on the embedded engine run side by side, each on a client of its own (store.pool)."""

from __future__ import annotations

import threading
import time

from eventpipe.api.source import open_reader
from eventpipe.store.client import connect
from eventpipe.store.dsn import embedded
from eventpipe.store.migration import migrate
from eventpipe.store.query import Query


def test_a_read_is_answered_while_another_runs(clickhouse_dsn: str) -> None:
    # One client ran one query at a time: every request waited behind every other, whatever its key.
    migrate(connect(clickhouse_dsn))
    reader = open_reader(clickhouse_dsn, 10)
    slow = threading.Thread(target=reader.run, args=(Query("SELECT sleep(2)", {}),))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert reader.run(Query("SELECT count() FROM events", {})) == [(0,)]
    waited = time.monotonic() - started
    assert slow.is_alive(), "the slow read still runs"
    slow.join()
    assert waited < 1, f"the second read waited {waited:.1f} s for the first"
    if embedded(clickhouse_dsn):
        # Each client is used again once free: two reads at a time made two, and no more.
        for _ in range(5):
            reader.run(Query("SELECT 1", {}))
        assert len(reader._pool._idle) == 2
