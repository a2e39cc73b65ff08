"""Guarantees 1 and 4 under storage faults: nothing acked before commit, memory bounded, all drains after.

Faults are injected at the store boundary (the real writer over chDB, switched
off and on), because the embedded engine cannot be paused from outside. Set
EVENTPIPE_FAULT_OUTAGE_S and EVENTPIPE_FAULT_RATE to run the outage longer
(the closing figures use 60 s at 2,000 msg/s); run with `-n 0 -s` to see the figures.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from eventpipe.errors import HaltStorageError, RetryableStorageError
from eventpipe.mqtt import packet
from eventpipe.mqtt.address import MqttAddress
from eventpipe.process import rss_bytes
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.query import EventFilter
from eventpipe.store.writer import CANARY_ID
from tests.support.faults import Broker, BrokerFactory, FaultyWriter, faulty_setup
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker, settings_for
from tests.support.relay import Relay
from tests.support.stream import Stream, stored_stream_ids
from tests.support.wait import wait_until

OUTAGE_S = float(os.environ.get("EVENTPIPE_FAULT_OUTAGE_S", "5"))
RATE = float(os.environ.get("EVENTPIPE_FAULT_RATE", "2000"))


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


def test_a_store_down_past_the_brokers_keepalive_with_the_worker_full_keeps_its_connection(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    """Found by an attack: full (here its held-bytes budget, as messages over 3.3 KB fill it before the
    window by default; QoS 0 does too), the worker waited for room on paho's network thread, which then
    sent nothing, not even a ping. The broker closed it after 1.5 keepalives (45 s by default), the acks of
    the batch being committed went nowhere, the broker sent the whole window again, and
    eventpipe_mqtt_connected said 1 all along; a store slower than that never got a message acked."""
    keepalive = 5  # the least allowed: the broker drops a silent client after 7.5 s
    broker, settings, writer = faulty_setup(
        broker_factory, clickhouse_dsn, 200, batch_max_rows=50, mqtt_keepalive_s=keepalive, max_held_bytes=256 * 1024
    )
    pad = "x" * 8000  # 100 of them are three times the budget
    messages = [("events/big", json.dumps({"event_id": f"k-{i}", "pad": pad}).encode()) for i in range(100)]
    with running_worker(settings, writer=writer) as run:
        writer.failure = RetryableStorageError
        assert publish_raw(broker.url, messages) == 100
        wait_until(lambda: run.metric("eventpipe_messages_in_flight") >= 25, what="the budget filled")
        time.sleep(4 * keepalive)  # Mosquitto checks keepalives now and then: it closed after 11 s here
        writer.failure = None
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 100, timeout=60, what="every message acked")
        assert run.reader.count_events() == 100
        assert run.metric("eventpipe_messages_redelivered_total") == 0, "the broker sent messages again"
        assert run.metric("eventpipe_mqtt_reconnects_total") == 0
    assert b"exceeded timeout" not in broker.log(), broker.log().decode(errors="replace")[-2000:]


def test_a_burst_many_commits_long_keeps_the_connection_while_a_slow_store_frees_room_bit_by_bit(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    """Found by a review of the test above's fix: the ping went out only when a wait for room timed out. QoS 0,
    which the window does not cover, comes in reads of hundreds; with a commit every 0.6 s freeing ten places,
    the wait never timed out, and the broker closed the connection (its log: exceeded timeout)."""
    keepalive = 5
    broker, settings, writer = faulty_setup(
        broker_factory, clickhouse_dsn, 10, batch_max_rows=10, mqtt_keepalive_s=keepalive
    )
    # Each commit waits 0.3 s on its insert and 0.3 s on its mark: room every 0.6 s, 10 places at a time.
    # 300 messages: 18 s, more than twice the 7.5 s the broker allows a silent client.
    writer.delay_s = 0.3
    messages = [("events/burst", json.dumps({"event_id": f"q-{i}"}).encode()) for i in range(300)]
    with running_worker(settings, writer=writer) as run:
        assert publish_raw(broker.url, messages, qos=0) == 300
        wait_until(lambda: run.reader.count_events() == 300, timeout=60, what="all 300 stored")
        assert run.metric("eventpipe_mqtt_reconnects_total") == 0
    assert b"exceeded timeout" not in broker.log(), broker.log().decode(errors="replace")[-2000:]


def test_a_broker_restart_while_the_worker_is_full_is_followed_by_a_reconnect_before_the_store_is_back(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    """Found by attacks: the worker, held full by a store outage, waited for room on paho's thread, so after a
    broker restart it could not reconnect until the store took writes again. eventpipe_mqtt_connected said 1
    all the while, and QoS 0 sent meanwhile found no session online and was dropped by the broker (150 of 940
    stored). Full, the worker now only stops reading (eventpipe.mqtt.valve): it sees the close, reconnects,
    and its session queues what comes, QoS 0 too. With more queued for it than the sockets hold (400 messages
    of 8 KB, a window of 200), the dead broker's close sat behind the worker's zero window until its next ping
    at keepalive/2 drew a reset: 14 s at the default 30 s (found by an attack on the valve); it pings once a
    second now."""
    broker, settings, writer = faulty_setup(
        broker_factory, clickhouse_dsn, 200, batch_max_rows=50, mqtt_keepalive_s=30, max_held_bytes=256 * 1024
    )
    pad = "x" * 8000
    messages = [("events/big", json.dumps({"event_id": f"r-{i}", "pad": pad}).encode()) for i in range(400)]
    after = [("events/small", json.dumps({"event_id": f"z-{i}"}).encode()) for i in range(200)]
    with running_worker(settings, writer=writer) as run:
        writer.failure = RetryableStorageError
        assert publish_raw(broker.url, messages) == 400
        wait_until(lambda: run.metric("eventpipe_messages_in_flight") >= 25, what="the budget filled")
        broker.restart()
        wait_until(lambda: run.metric("eventpipe_mqtt_reconnects_total") == 1, timeout=8, what="a reconnect")
        wait_until(lambda: run.metric("eventpipe_mqtt_connected") == 1, timeout=15, what="connected, store down")
        assert writer.failure is RetryableStorageError and run.reader.count_events() == 0
        assert publish_raw(broker.url, after, qos=0) == 200
        writer.failure = None
        wait_until(lambda: run.reader.count_events() == 600, timeout=60, what="all 600 stored, QoS 0 too")
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") >= 400, timeout=30, what="QoS 1 acked")
        assert run.metric("eventpipe_mqtt_connected") == 1
        assert run.unreconciled() == 0


def test_qos_0_read_from_a_closed_connection_is_stored_once_the_store_is_back_with_nothing_more_sent(
    broker_factory: BrokerFactory, clickhouse_dsn: str
) -> None:
    """Found by an attack on the valve: what the worker read from a connection closed while it was full
    waited for a new message on the next connection before it was offered again; on a quiet stream it stayed
    unstored, lost at the next stop, and held the feed's complete_until back."""
    broker, settings, writer = faulty_setup(
        broker_factory, clickhouse_dsn, 200, batch_max_rows=50, mqtt_keepalive_s=5, max_held_bytes=256 * 1024
    )
    address = MqttAddress.parse(broker.url)
    relay = Relay((address.host, address.port))  # a network path that drops the connection
    settings = settings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{relay.port}"})
    pad = "x" * 8000
    messages = [("events/big", json.dumps({"event_id": f"q-{i}", "pad": pad}).encode()) for i in range(100)]
    try:
        with running_worker(settings, writer=writer) as run:
            writer.failure = RetryableStorageError
            assert publish_raw(broker.url, messages, qos=0) == 100
            wait_until(lambda: run.metric("eventpipe_messages_in_flight") >= 25, what="the budget filled")
            # And read past it: cut sooner (under load), nothing had been read from the connection to wait.
            wait_until(lambda: run.metric("eventpipe_messages_waiting") >= 1, what="messages waiting past the budget")
            relay.cut()
            wait_until(lambda: run.metric("eventpipe_mqtt_reconnects_total") == 1, timeout=15, what="a reconnect")
            wait_until(lambda: run.metric("eventpipe_mqtt_connected") == 1, timeout=15, what="connected again")
            waiting = [json.loads(item.payload)["event_id"] for item in run.worker.consumer._waiting]
            assert waiting, "nothing waits beside what the worker holds: the test shows nothing"
            writer.failure = None
            wait_until(
                lambda: all(run.reader.event(event_id) is not None for event_id in waiting),
                timeout=30,
                what="what waited stored, with nothing more sent",
            )
            assert run.unreconciled() == 0
    finally:
        relay.close()


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
        # The known-good rows written to tell poison from the store are there, and in no read.
        canaries = "SELECT count() FROM {t:Identifier} WHERE event_id = {id:String}"
        for table in ("events", "events_by_user", "arrivals"):
            assert client.command(canaries, parameters={"t": table, "id": CANARY_ID}) >= 1, table
        assert run.reader.event(CANARY_ID) is None
        assert CANARY_ID not in {event.event_id for event in run.reader.event_page(EventFilter(), 1000).rows}
        assert run.reader.event_page(EventFilter(user_id=CANARY_ID), 10).rows == []


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


def test_a_refusal_every_row_meets_halts_the_worker_and_dead_letters_nothing(
    broker: Broker, clickhouse_dsn: str
) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    # A recognised refusal (VIOLATED_CONSTRAINT) that every row meets, the known-good one included: an
    # operator's mistake, not poison. Every event was bisected down to itself and dead-lettered as
    # storage_rejected, and all of them acknowledged, at about 50 rows a second (found by an attack).
    client.command("ALTER TABLE events ADD CONSTRAINT drift CHECK length(event_id) > 200")
    messages = [("events/x", json.dumps({"event_id": f"r-{i}"}).encode()) for i in range(200)]
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        assert publish_raw(broker.url, messages) == 200
        wait_until(lambda: run.metric("eventpipe_storage_halted") == 1, timeout=60, what="the halt gauge")
        assert run.metric("eventpipe_messages_acked_total") == 0
        assert run.reader.count_dead_letters() == 0
        client.command("ALTER TABLE events DROP CONSTRAINT drift")
        wait_until(lambda: run.reader.count_events() == 200, timeout=90, what="all stored once fixed")
        assert run.reader.count_dead_letters() == 0
        assert run.unreconciled() == 0


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
