"""The worker's storage retries alone: a failing write ends stored, a poison row is isolated only while
ClickHouse answers, and a stop gives up at its deadline without waiting out a backoff.

The same paths against a real store (an outage, a halt, a poison row) are tests/fault/test_storage.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.errors import HaltStorageError, RetryableStorageError, StorageError, UnknownStorageError
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.retry import POISON_AFTER, Abandoned, Retrier
from tests.support.wait import wait_until

QUICK = Settings(retry_initial_s=0.001, retry_max_s=0.002)


def failing(errors: list[StorageError]) -> tuple[Callable[[bool], str], list[bool]]:
    """A write that raises `errors` in turn, then stores; and the isolate flag of every call."""
    calls: list[bool] = []

    def write(isolate: bool) -> str:
        calls.append(isolate)
        if errors:
            raise errors.pop(0)
        return "stored"

    return write, calls


def test_a_failing_write_is_retried_until_stored_and_every_failure_counted() -> None:
    registry = CollectorRegistry()
    write, calls = failing([RetryableStorageError("too many parts"), HaltStorageError("no such table")])
    assert Retrier(QUICK, lambda: True, IngestMetrics(registry)).run(write) == "stored"
    assert calls == [False, False, False]
    assert registry.get_sample_value("eventpipe_storage_errors_total", {"class": "retry"}) == 1
    assert registry.get_sample_value("eventpipe_storage_errors_total", {"class": "halt"}) == 1
    assert registry.get_sample_value("eventpipe_storage_halted") == 0, "a write that succeeds ends the halt"


@pytest.mark.parametrize(("takes", "isolated"), [(True, True), (False, False)])
def test_unknown_errors_are_taken_for_poison_only_while_the_store_takes_other_rows(takes: bool, isolated: bool) -> None:
    write, calls = failing([UnknownStorageError("?")] * POISON_AFTER)
    Retrier(QUICK, lambda: takes, IngestMetrics(CollectorRegistry())).run(write)
    assert calls == [False] * POISON_AFTER + [isolated]


def test_a_write_that_cannot_isolate_rows_never_writes_the_known_good_row() -> None:
    # Dead letters and marks: each check of the store would write a canary row for nothing.
    checks: list[bool] = []
    write, calls = failing([UnknownStorageError("?")] * (3 * POISON_AFTER))
    Retrier(QUICK, lambda: checks.append(True) or True, IngestMetrics(CollectorRegistry())).run(write, isolating=False)
    assert checks == [] and calls == [False] * (3 * POISON_AFTER + 1)


def test_a_stop_ends_a_long_backoff_and_gives_up_at_its_deadline() -> None:
    retrier = Retrier(Settings(retry_initial_s=60, retry_max_s=60), lambda: False, IngestMetrics(CollectorRegistry()))
    write, calls = failing([RetryableStorageError("down")] * 1000)
    outcome: list[BaseException] = []

    def flusher() -> None:
        try:
            retrier.run(write)
        except Abandoned as exc:
            outcome.append(exc)

    thread = threading.Thread(target=flusher, daemon=True)
    thread.start()
    wait_until(lambda: calls, timeout=5, what="the first attempt")  # now in a backoff of 30 s or more
    stopped = time.monotonic()
    retrier.stop_by(stopped + 0.3)
    thread.join(10)
    assert not thread.is_alive() and outcome, "a stop must not wait out the backoff"
    assert 0.3 <= time.monotonic() - stopped < 10, "tried until the deadline, then gave up"
    assert len(calls) >= 2, "the stop woke the backoff for one more try"


@pytest.mark.parametrize(
    ("dsn", "where"),
    [
        (
            "http://eventpipe_worker:s3cret@clickhouse:8123/eventpipe",
            "clickhouse:8123/eventpipe (EVENTPIPE_CLICKHOUSE_DSN)",
        ),
        ("", "(the data dir: EVENTPIPE_DATA_DIR, or `up --data-dir`)"),
    ],
)
def test_a_failed_write_names_the_store_and_the_setting_to_fix_never_its_password(
    dsn: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    # ClickHouse's "Authentication failed" after a password rotation names neither the DSN nor its variable.
    settings = Settings(clickhouse_dsn=dsn, retry_initial_s=0.001, retry_max_s=0.002)
    write, _calls = failing([HaltStorageError("Code: 516. eventpipe_worker: Authentication failed")])
    with caplog.at_level("WARNING", logger="eventpipe.ingest.retry"):
        Retrier(settings, lambda: True, IngestMetrics(CollectorRegistry())).run(write)
    line = caplog.records[0].getMessage()
    assert where in line and "Authentication failed" in line, line
    assert "s3cret" not in line
