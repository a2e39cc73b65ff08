"""Guarantee 4, memory bounded, in bytes: what the worker holds never passes EVENTPIPE_MAX_HELD_BYTES,
payloads and topics counted, while the store is down, and all drains after."""

from __future__ import annotations

import json
import time

from eventpipe.errors import RetryableStorageError
from eventpipe.process import rss_bytes
from tests.support.faults import BrokerFactory, faulty_setup
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker
from tests.support.stream import stored_stream_ids
from tests.support.wait import wait_until


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
