"""Guarantees 1 and 4 under storage faults: nothing acked before commit, memory bounded, all drains after.

Faults are injected at the store boundary (the real writer over chDB, switched
off and on), because the embedded engine cannot be paused from outside. Set
EVENTPIPE_FAULT_OUTAGE_S and EVENTPIPE_FAULT_RATE to run the outage longer
(the closing figures use 60 s at 2,000 msg/s); run with -s to see the figures.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest

from eventpipe.config import Settings
from eventpipe.errors import HaltStorageError, RetryableStorageError
from eventpipe.host import rss_bytes
from eventpipe.mqtt import packet
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import CANARY_ID
from tests.support.faults import FaultyWriter
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.stream import Stream, stored_stream_ids
from tests.support.wait import wait_until

Broker = LocalBroker | ContainerBroker
BrokerFactory = Callable[[int], Broker]
OUTAGE_S = float(os.environ.get("EVENTPIPE_FAULT_OUTAGE_S", "5"))
RATE = float(os.environ.get("EVENTPIPE_FAULT_RATE", "2000"))


def faulty_setup(
    broker_factory: BrokerFactory, dsn: str, window: int, batch_max_rows: int, **overrides: object
) -> tuple[Broker, Settings, FaultyWriter]:
    """A migrated store behind a FaultyWriter, and a broker whose in-flight window matches the worker's;
    `overrides` are more of the worker's settings."""
    migrate(connect(dsn))
    broker = broker_factory(window)
    settings = settings_for(broker.url, dsn, batch_max_rows=batch_max_rows, mqtt_receive_maximum=window, **overrides)
    return broker, settings, FaultyWriter(connect(dsn))


def test_an_outage_stops_acks_holds_no_more_than_the_window_and_drains_after(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    window = 2000
    broker, settings, writer = faulty_setup(broker_factory, clickhouse_dsn, window, batch_max_rows=1000)
    with running_worker(settings, writer=writer) as run:
        stream = Stream(broker.url, count=int(RATE * (OUTAGE_S + 3)), rate=RATE)
        stream.start()
        wait_until(lambda: run.metric("eventpipe_events_stored_total") > 0, what="traffic flowing")
        time.sleep(1)

        writer.failure = RetryableStorageError
        wait_until(lambda: writer.failed_writes >= 1, what="the first failed write")
        acked_at_start = run.metric("eventpipe_messages_acked_total")
        rss_start, held, rss_peak = rss_bytes(), 0.0, 0
        outage_end = time.monotonic() + OUTAGE_S
        while time.monotonic() < outage_end:
            held = max(held, run.metric("eventpipe_messages_in_flight"))
            rss_peak = max(rss_peak, rss_bytes())
            assert run.metric("eventpipe_messages_acked_total") == acked_at_start, "acked during the outage"
            time.sleep(0.1)
        assert held <= window, f"held {held} messages with a window of {window}"
        assert run.metric("eventpipe_storage_errors_total", **{"class": "retry"}) >= 2

        writer.failure = None
        acknowledged = stream.acknowledged()
        wait_until(
            lambda: (
                run.metric("eventpipe_messages_in_flight") == 0
                and run.metric("eventpipe_messages_received_total") >= len(acknowledged)
            ),
            timeout=120,
            what="the backlog drained",
        )
        ids = stored_stream_ids(clickhouse_dsn, stream.prefix)
        stored = set(ids)
        assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged events are missing"
        duplicates = len(ids) - len(stored)
        assert duplicates == 0
        assert run.unreconciled() == 0
        print(
            f"\noutage {OUTAGE_S:.0f}s at {RATE:.0f} msg/s: published {stream.published}, "
            f"acknowledged by broker {len(acknowledged)}, stored {len(stored)}, duplicates {duplicates}, "
            f"failed writes {writer.failed_writes}, peak held {held:.0f} (window {window}), "
            f"process RSS {rss_start / 2**20:.0f} MiB at outage start, peak {rss_peak / 2**20:.0f} MiB"
        )


def test_a_halt_keeps_everything_unacked_until_an_operator_fixes_it(broker: Broker, clickhouse_dsn: str) -> None:
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_dsn)
    writer = FaultyWriter(connect(clickhouse_dsn))
    writer.failure = HaltStorageError
    with running_worker(settings, writer=writer) as run:
        messages = [("events/halt", json.dumps({"event_id": f"h-{i}"}).encode()) for i in range(300)]
        assert publish_raw(broker.url, messages) == 300
        wait_until(lambda: run.metric("eventpipe_storage_halted") == 1, what="the halt gauge")
        wait_until(lambda: writer.failed_writes >= 2, what="slow retries")
        assert run.metric("eventpipe_messages_acked_total") == 0
        writer.failure = None
        wait_until(lambda: run.reader.count_events() == 300, what="all stored once fixed")
        wait_until(lambda: run.metric("eventpipe_storage_halted") == 0, what="the halt gauge to clear")


def test_rows_the_table_refuses_are_dead_lettered_and_the_rest_stored(broker: Broker, clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    # A real refusal from the engine: an operator's constraint the data breaks.
    client.command("ALTER TABLE events ADD CONSTRAINT no_test_users CHECK user_id IS NULL OR user_id != 'banned'")
    messages = [
        ("events/login", json.dumps({"event_id": f"c-{i}", "user_id": "banned" if i % 50 == 7 else f"u{i}"}).encode())
        for i in range(400)
    ]
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        assert publish_raw(broker.url, messages) == 400
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 400, what="every message acked")
        assert run.reader.count_events() == 392
        assert run.reader.dead_letter_reasons() == {"storage_rejected": 8}
        assert run.unreconciled() == 0
        assert run.worker.alive


def test_a_slow_store_neither_grows_memory_nor_makes_the_broker_drop(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    window = 500
    broker, settings, writer = faulty_setup(broker_factory, clickhouse_dsn, window, batch_max_rows=250)
    writer.delay_s = 0.2  # about 1,250 msg/s at most, slower than the burst below
    with running_worker(settings, writer=writer) as run:
        # 20,000 at once: far past Mosquitto's default queue of 1,000 per session.
        messages = [("events/burst", json.dumps({"event_id": f"b-{i}"}).encode()) for i in range(20_000)]
        assert publish_raw(broker.url, messages) == 20_000
        # A drop by the broker would show as a count that never gets there.
        wait_until(lambda: run.reader.count_events() == 20_000, timeout=120, what="all 20,000 stored")
        assert run.metric("eventpipe_messages_received_total") == 20_000
        assert run.unreconciled() == 0


def test_large_messages_hold_no_more_than_the_byte_budget_and_batch_by_bytes(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    # 3,000 events of 60 KiB (176 MiB) through the default window, which alone would let the worker hold them
    # all: only EVENTPIPE_MAX_HELD_BYTES keeps it to 16 MiB. Batches close at half of that, well before 20,000
    # rows or the two-minute timer: only the byte rule lets them flow.
    window, budget, count, pad = 40_000, 16 * 2**20, 3_000, 60 * 1024
    broker, settings, writer = faulty_setup(
        broker_factory, clickhouse_dsn, window, 20_000, batch_max_ms=120_000, max_held_bytes=budget
    )
    writer.failure = RetryableStorageError
    peak, rss_peak = 0.0, 0

    def sample() -> float:
        nonlocal peak, rss_peak
        held = run.metric("eventpipe_messages_in_flight_bytes")
        peak, rss_peak = max(peak, held), max(rss_peak, rss_bytes())
        assert held <= budget, f"held {held / 2**20:.1f} MiB of payloads with a budget of {budget / 2**20:.0f} MiB"
        return held

    with running_worker(settings, writer=writer) as run:
        rss_start = rss_bytes()
        for chunk in range(0, count, 500):  # a chunk at a time, so the producer's copies stay small too
            messages = [
                ("events/big", json.dumps({"event_id": f"big-{i}", "pad": "x" * pad}).encode())
                for i in range(chunk, chunk + 500)
            ]
            assert publish_raw(broker.url, messages) == 500
        # The store is down: the worker fills its budget, then stops reading.
        wait_until(lambda: sample() > budget - 2 * pad, interval=0.02, what="the byte budget filled")
        for _ in range(100):
            sample()
            time.sleep(0.02)
        assert run.metric("eventpipe_messages_acked_total") == 0
        assert run.metric("eventpipe_messages_in_flight") < budget / pad

        writer.failure, writer.delay_s = None, 0.1  # back, and slow: the budget stays full while it drains
        per_batch = budget // 2 // len(messages[0][1])

        def full_batches_stored() -> bool:
            sample()
            return run.metric("eventpipe_events_stored_total") >= count - per_batch

        wait_until(full_batches_stored, timeout=90, interval=0.02, what="every full batch stored before its timer")
    # The stop commits the last batch, short of max_bytes; each event was stored once, none lost.
    ids = stored_stream_ids(clickhouse_dsn, "big")
    assert sorted(ids) == sorted(f"big-{i}" for i in range(count))
    assert run.metric("eventpipe_events_stored_total") == count
    assert run.metric("eventpipe_messages_acked_total") == count
    assert run.metric("eventpipe_messages_in_flight_bytes") == 0
    assert run.reader.count_dead_letters() == 0
    assert run.unreconciled() == 0
    print(
        f"\n{count} x {pad // 1024} KiB: peak held {peak / 2**20:.1f} MiB (budget {budget / 2**20:.0f} MiB), "
        f"process RSS {rss_start / 2**20:.0f} MiB at start, peak {rss_peak / 2**20:.0f} MiB"
    )


def test_long_topics_count_against_the_byte_budget_like_payloads(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    # The budget counted payload bytes only: 20,000 messages of 60 KiB topics and empty payloads took the
    # worker from 405 MiB to 1.5 GiB in an attack while eventpipe_messages_in_flight_bytes said 1.2 MiB.
    window, budget, count, long = 40_000, 4 * 2**20, 400, 60 * 1024
    broker, settings, writer = faulty_setup(broker_factory, clickhouse_dsn, window, 20_000, max_held_bytes=budget)
    writer.failure = RetryableStorageError
    with running_worker(settings, writer=writer) as run:
        messages = [
            (f"events/{i:05d}/" + "t" * long, json.dumps({"event_id": f"t-{i}", "event_type": "long_topic"}).encode())
            for i in range(count)
        ]
        assert publish_raw(broker.url, messages) == count
        # The store is down: the worker fills its budget with topics, then stops reading.
        wait_until(lambda: run.metric("eventpipe_messages_in_flight_bytes") > budget - 2 * long, what="budget full")
        time.sleep(1)
        assert run.metric("eventpipe_messages_in_flight_bytes") <= budget
        assert run.metric("eventpipe_messages_in_flight") <= budget // long
        writer.failure = None
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == count, timeout=60, what="all stored")
    assert sorted(stored_stream_ids(clickhouse_dsn, "t")) == sorted(f"t-{i}" for i in range(count))
    assert run.metric("eventpipe_messages_in_flight_bytes") == 0


def test_a_poison_row_with_an_unrecognised_error_cannot_block_the_pipe(broker: Broker, clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    # throwIf fails with an error code the classifier does not know: retried at
    # first, then isolated because the server keeps answering.
    # NULL-safe, so that it refuses that row only: a CHECK whose value is NULL refuses the row too, so
    # `user_id = 'poison'` alone refused every event without a user (the worker's canary among them).
    client.command(
        "ALTER TABLE events ADD CONSTRAINT poison CHECK throwIf(ifNull(user_id, '') = 'poison', 'poison row') = 0"
    )
    messages = [
        ("events/x", json.dumps({"event_id": f"p-{i}", "user_id": "poison" if i == 42 else "ok"}).encode())
        for i in range(100)
    ]
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        assert publish_raw(broker.url, messages) == 100
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 100, timeout=60, what="all acked")
        assert run.metric("eventpipe_storage_errors_total", **{"class": "unknown"}) >= 5
        assert run.reader.count_events() == 99
        assert run.reader.dead_letter_reasons() == {"storage_rejected": 1}
        assert run.unreconciled() == 0


@pytest.mark.parametrize("count", [50, 1], ids=["50 events", "a lone event"])
def test_an_error_every_row_hits_is_no_poison_and_dead_letters_nothing(
    broker: Broker, clickhouse_dsn: str, count: int
) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    # Every insert fails with a code the classifier does not know, while the server answers: a setup
    # problem (or a read-only or full disk), so nothing may be dead-lettered. A lone event was: alone in
    # its batch it failed on its own, and an attack saw it in a read-only spell of the data dir ("Read-only
    # file system", 1001). The store refusing a known-good row too (Writer.takes_writes) says it is not the row.
    client.command("ALTER TABLE events ADD CONSTRAINT broken CHECK throwIf(1, 'broken setup') = 0")
    messages = [("events/x", json.dumps({"event_id": f"s-{i}"}).encode()) for i in range(count)]
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        assert publish_raw(broker.url, messages) == count
        wait_until(
            lambda: run.metric("eventpipe_storage_errors_total", **{"class": "unknown"}) >= 12,
            timeout=60,
            what="retried well past the poison threshold",
        )
        assert run.metric("eventpipe_messages_acked_total") == 0
        assert run.reader.count_dead_letters() == 0
        client.command("ALTER TABLE events DROP CONSTRAINT broken")
        wait_until(lambda: run.reader.count_events() == count, timeout=60, what="all stored once fixed")
        assert run.reader.count_dead_letters() == 0
    # The canaries the worker wrote meanwhile are in no read.
    assert run.reader.count_events() == count
    assert run.reader.event(CANARY_ID) is None


def test_oversize_payloads_held_through_an_outage_become_one_dead_letter_cut_to_the_limit(
    broker: Broker, clickhouse_dsn: str
) -> None:
    # A faulty producer floods payloads over the limit while storage is down, so the worker holds them all.
    # They are as large as the broker lets through: larger ones it refuses on their header, so they cost
    # the worker nothing (tests/integration/test_packet.py, with a 200 MiB one). Of those it passes the
    # worker keeps only what their dead letter keeps; once storage is back every copy is acknowledged.
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_dsn)
    writer = FaultyWriter(connect(clickhouse_dsn))
    writer.failure = RetryableStorageError
    topic = "events/huge"
    # The broker's limit less type byte, topic, packet id and an empty property length.
    count, size = 150, packet.broker_limit(settings.max_payload_bytes) - 1 - (2 + len(topic)) - 2 - 1
    with running_worker(settings, writer=writer) as run:
        assert publish_raw(broker.url, [(topic, b"x" * size)] * count) == count
        wait_until(lambda: run.metric("eventpipe_messages_in_flight") == count, what="all held, none stored")
        writer.failure = None
        wait_until(lambda: run.reader.count_dead_letters() == 1, what="the dead letter (the copies are one)")
        (letter,) = run.reader.dead_letters(None, 10)
        assert (letter.reason, letter.payload_size, len(letter.payload)) == ("oversize", size, 64 * 1024)
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == count, what="every copy acknowledged")
