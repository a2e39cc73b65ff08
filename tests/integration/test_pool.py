"""The API's reads on the embedded engine: each key's run one at a time, beside other keys' (store.pool)."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from eventpipe.api.source import open_reader
from eventpipe.store.client import connect
from eventpipe.store.dsn import embedded
from eventpipe.store.migration import migrate
from eventpipe.store.query import Query
from eventpipe.store.reader import CALLER, Reader

SLOW = Query("SELECT sleep(2)", {})
QUICK = Query("SELECT count() FROM events", {})


def run_as(reader: Reader, name: str, query: Query) -> None:
    context = contextvars.copy_context()
    context.run(CALLER.set, name)
    context.run(reader.run, query)


@pytest.fixture
def reader(clickhouse_dsn: str) -> Reader:
    migrate(connect(clickhouse_dsn))
    return open_reader(clickhouse_dsn, 10, "EVENTPIPE_CLICKHOUSE_DSN")


def test_a_keys_read_is_answered_while_another_keys_runs(clickhouse_dsn: str, reader: Reader) -> None:
    # One client ran one query at a time: every request waited behind every other, whatever its key.
    slow = threading.Thread(target=run_as, args=(reader, "one", SLOW))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    run_as(reader, "another", QUICK)
    waited = time.monotonic() - started
    assert slow.is_alive(), "the slow read still runs"
    slow.join()
    assert waited < 1, f"the other key's read waited {waited:.1f} s for the first"
    if embedded(clickhouse_dsn):
        # Each client is used again once free: two reads at a time made two, and no more.
        for name in ("one", "another", "a third"):
            run_as(reader, name, QUICK)
        assert reader.clients_made == 2


def test_one_keys_reads_run_one_at_a_time_on_the_embedded_engine(clickhouse_dsn: str, reader: Reader) -> None:
    # Side by side, 8 reads of one key took the CPU from the worker's inserts in the same process.
    if not embedded(clickhouse_dsn):
        pytest.skip("a server's client runs concurrent queries, for one key too, as it always did")
    slow = threading.Thread(target=run_as, args=(reader, "one", SLOW))
    slow.start()
    time.sleep(0.3)
    run_as(reader, "one", QUICK)
    assert not slow.is_alive(), "the key's second read ran beside its first"
    slow.join()
