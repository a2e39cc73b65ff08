"""The worker against a real Mosquitto and the real ClickHouse engine."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from eventpipe.ingest.clock import Clock
from eventpipe.ingest.consumer import Consumer
from eventpipe.ingest.delivery import Delivery
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.worker import Worker
from eventpipe.mqtt.receiver import Receiver
from eventpipe.producer.publisher import publish_demo
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.wait import wait_until

Broker = LocalBroker | ContainerBroker


def migrated(dsn: str) -> str:
    migrate(connect(dsn))
    return dsn


def test_published_events_are_stored_and_acknowledged(broker: Broker, clickhouse_dsn: str) -> None:
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings) as run:
        report = publish_demo(broker.url, 2000, seed=1)
        assert report.acknowledged == 2000
        wait_until(lambda: run.reader.count_events() == 2000, what="2000 stored events")
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 2000, what="2000 acks")
        assert run.metric("eventpipe_messages_in_flight") == 0
        assert run.reader.count_dead_letters() == 0


def test_on_paho_s_own_receive_path_events_are_stored_and_acknowledged_too(
    broker: Broker, clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fallback of eventpipe.mqtt.receiver, which only a caller that asks gets. The fast path is broken
    # here on purpose: every event that arrives came through paho's stock client.
    def broken(_receiver: Receiver) -> MQTTErrorCode:
        raise AssertionError("the fast receive path ran")

    monkeypatch.setattr(Receiver, "_packet_read", broken)
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings, consumer_factory=partial(Consumer, stock_paho=True)) as run:
        report = publish_demo(broker.url, 2000, seed=2)
        assert report.acknowledged == 2000
        wait_until(lambda: run.reader.count_events() == 2000, what="2000 stored events")
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 2000, what="2000 acks")
        assert run.metric("eventpipe_messages_in_flight") == 0
        assert run.worker.problem() is None


def test_bad_payloads_become_dead_letters_and_good_ones_flow_on(broker: Broker, clickhouse_dsn: str) -> None:
    bad = [
        ("events/x", b"\xff\xfe\xfd"),
        ("events/x", b"{not json"),
        ("events/x", b"[1, 2, 3]"),
        ("events/", b'{"a": 1}'),
        ("events/x", b'{"timestamp": "last tuesday"}'),
        ("events/x", b'{"event_id": 12}'),
        ("events/x", b'{"a":' * 40 + b"1" + b"}" * 40),
        ("events/x", json.dumps({"blob": "x" * 66_000}).encode()),  # over the payload limit, under the packet limit
    ]
    good = [("events/click", json.dumps({"event_id": f"g-{i}", "n": i}).encode()) for i in range(300)]
    messages = good[:100] + bad + good[100:]
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings) as run:
        assert publish_raw(broker.url, messages) == len(messages)
        wait_until(lambda: run.reader.count_events() == 300, what="the 300 valid events")
        wait_until(lambda: run.reader.count_dead_letters() == len(bad), what="a dead letter per bad payload")
        assert run.reader.dead_letter_reasons() == {
            "invalid_utf8": 1,
            "invalid_json": 1,
            "not_an_object": 1,
            "missing_event_type": 1,
            "invalid_timestamp": 1,
            "invalid_event_id": 1,
            "too_deep": 1,
            "oversize": 1,
        }
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == len(messages), what="every message acked")
        assert run.metric("eventpipe_dead_letters_total", reason="oversize") == 1
        assert run.worker.alive


class CrashBeforeAck(Consumer):
    """Commits happen, acknowledgements never leave: a worker killed between the two."""

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        return 0


def test_a_message_redelivered_after_a_crash_is_stored_once(broker: Broker, clickhouse_dsn: str) -> None:
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    messages = [("events/login", json.dumps({"event_id": f"r-{i}"}).encode()) for i in range(300)]
    with running_worker(settings, CrashBeforeAck) as first:
        assert publish_raw(broker.url, messages) == 300
        wait_until(lambda: first.reader.count_events() == 300, what="the first copies committed")
    # Same client id, so the same broker session: everything unacked comes back.
    with running_worker(settings) as second:
        wait_until(lambda: second.metric("eventpipe_messages_acked_total") == 300, what="redeliveries acked")
        assert second.metric("eventpipe_messages_redelivered_total") == 300
        assert second.metric("eventpipe_events_stored_total") == 300
        assert second.reader.count_events() == 300


def test_messages_sent_while_the_worker_is_away_arrive_when_it_returns(broker: Broker, clickhouse_dsn: str) -> None:
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings):
        pass  # creates the persistent session, then leaves
    assert publish_demo(broker.url, 700, seed=2).acknowledged == 700
    with running_worker(settings) as back:
        wait_until(lambda: back.reader.count_events() == 700, what="the backlog")


def test_qos_0_sent_while_the_worker_is_away_arrives_when_it_returns(broker: Broker, clickhouse_dsn: str) -> None:
    # The broker queues QoS 0 for the worker's session as QoS 1 (upgrade_outgoing_qos). Before, it dropped all
    # 300, and a QoS 0 flood waited in the worker's socket buffer in the broker, seen by no metric: 4.4 GiB.
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings):
        pass  # creates the persistent session, then leaves
    messages = [("events/zero", json.dumps({"event_id": f"q0-{i}"}).encode()) for i in range(300)]
    assert publish_raw(broker.url, messages, qos=0) == 300
    with running_worker(settings) as back:
        wait_until(lambda: back.reader.count_events() == 300, what="the QoS 0 sent while away")
        wait_until(lambda: back.metric("eventpipe_messages_acked_total") == 300, what="each acknowledged as QoS 1")


def test_stopping_commits_and_acknowledges_what_the_worker_holds(broker: Broker, clickhouse_dsn: str) -> None:
    # Batches that never fill and a timer that never fires: only stop() can commit.
    settings = settings_for(broker.url, migrated(clickhouse_dsn), batch_max_ms=600_000, batch_max_rows=1000)
    with running_worker(settings) as run:
        publish_demo(broker.url, 150, seed=3)
        wait_until(lambda: run.metric("eventpipe_messages_received_total") == 150, what="150 received")
        assert run.reader.count_events() == 0
        assert run.worker.stop() is True
        assert run.reader.count_events() == 150
        assert run.metric("eventpipe_messages_acked_total") == 150
    # All were acked: a new session on the same id gets nothing old back.
    with running_worker(settings.model_copy(update={"batch_max_ms": 50})) as again:
        publish_raw(broker.url, [("events/marker", b'{"event_id": "marker"}')])
        wait_until(lambda: again.metric("eventpipe_messages_acked_total") == 1, what="the marker")
        assert again.metric("eventpipe_messages_received_total") == 1
        assert again.reader.count_events() == 151


def test_a_store_that_refuses_the_marks_does_not_hold_up_the_batches(broker: Broker, clickhouse_dsn: str) -> None:
    # Marks only move the feed's complete_until on; a missed one is replaced within seconds. So
    # a worker_marks that fails on its own (gone here, as a missing grant would refuse it) may
    # not stall what the worker stores and acks.
    settings = settings_for(broker.url, migrated(clickhouse_dsn), batch_max_ms=50, batch_max_rows=100)
    with running_worker(settings) as run:
        connect(clickhouse_dsn).command("DROP TABLE worker_marks")
        assert publish_demo(broker.url, 1000, seed=6).acknowledged == 1000
        # About 2 s here; retrying each mark as a batch is retried stalled the worker for 15 s.
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 1000, timeout=10, what="1000 acks")
        assert run.reader.count_events() == 1000
        assert run.worker.problem() is None


def test_while_storage_is_down_the_worker_holds_no_more_than_its_window(broker: Broker, clickhouse_dsn: str) -> None:
    # No schema yet: every write fails with UNKNOWN_TABLE, a halt. Nothing may be acked.
    settings = settings_for(broker.url, clickhouse_dsn, batch_max_rows=100, mqtt_receive_maximum=200)
    with running_worker(settings) as run:
        assert publish_demo(broker.url, 1000, seed=4).acknowledged == 1000
        wait_until(lambda: run.metric("eventpipe_storage_halted") == 1, what="the halt to show")
        wait_until(lambda: run.metric("eventpipe_messages_received_total") == 200, what="a full window")
        wait_until(lambda: run.metric("eventpipe_storage_errors_total", **{"class": "halt"}) >= 3, what="retries")
        assert run.metric("eventpipe_messages_received_total") == 200
        assert run.metric("eventpipe_messages_acked_total") == 0
        migrate(connect(clickhouse_dsn))  # the operator fixes it
        wait_until(lambda: run.reader.count_events() == 1000, timeout=60, what="the whole backlog after recovery")
        assert run.metric("eventpipe_storage_halted") == 0


def test_workers_in_a_share_group_split_the_stream_and_store_it_once(broker: Broker, clickhouse_dsn: str) -> None:
    settings = settings_for(broker.url, migrated(clickhouse_dsn), mqtt_share_group="ingest")
    other = settings.model_copy(update={"mqtt_client_id": settings.mqtt_client_id + "-b"})
    with running_worker(settings) as first, running_worker(other) as second:
        assert publish_demo(broker.url, 2000, seed=5).acknowledged == 2000
        wait_until(lambda: first.reader.count_events() == 2000, what="2000 stored")
        received = [run.metric("eventpipe_messages_received_total") for run in (first, second)]
        assert sum(received) == 2000
        assert min(received) > 0, f"one worker got nothing: {received}"


def test_a_broker_window_that_disagrees_with_the_worker_is_reported(
    broker_factory: Callable[[int], Broker], clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory(5000)
    with running_worker(settings_for(broker.url, migrated(clickhouse_dsn))) as run:
        assert run.metric("eventpipe_mqtt_broker_receive_maximum") == 5000
    assert "max_inflight_messages" in caplog.text
    assert "EVENTPIPE_MQTT_RECEIVE_MAXIMUM" in caplog.text


class BuggyConsumer(Consumer):
    """A bug in a receive callback: paho's network thread dies of the exception."""

    def _on_burst(self, burst: list[Any]) -> None:
        raise RuntimeError("injected bug in a receive callback")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the injected bug's traceback
def test_a_dead_network_thread_is_reported_not_hidden(broker: Broker, clickhouse_dsn: str) -> None:
    # Nothing would read the socket or send acks again, while every gauge looks healthy:
    # the composition roots stop (and the container restarts) on any problem().
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings, consumer_factory=BuggyConsumer) as run:
        assert run.worker.problem() is None
        assert publish_raw(broker.url, [("events/x", b'{"event_id": "a"}')]) == 1
        wait_until(lambda: run.worker.problem() is not None, what="the problem reported")
        assert "network thread stopped" in str(run.worker.problem())


def test_events_spread_over_decades_cannot_spread_the_store_over_decades(broker: Broker, clickhouse_dsn: str) -> None:
    """The hostile producer of issue 13: 20k valid events with timestamps from 25 years ago to now.

    Before the past bound each batch wrote a part into each of ~300 monthly
    partitions (1.1 s a batch instead of 0.04 s) and every read slowed for
    good. Now those older than EVENTPIPE_MAX_PAST_DAYS are dead letters, and
    the store keeps the partitions the bounded window can reach."""
    now_ms = int(time.time() * 1000)
    span_ms = 25 * 365 * 86_400_000
    count = 20_000  # issue 13's figure: as many made the newest page 20x slower
    stamps = [now_ms - span_ms + span_ms * i // count for i in range(count)]
    messages = [
        ("events/click", json.dumps({"event_id": f"d-{i}", "timestamp": stamp, "user_id": f"u{i % 97}"}).encode())
        for i, stamp in enumerate(stamps)
    ]
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    recent = sum(1 for stamp in stamps if stamp >= now_ms - settings.max_past_days * 86_400_000 + 60_000)
    with running_worker(settings) as run:
        assert sum(publish_raw(broker.url, messages[i : i + 5000]) for i in range(0, count, 5000)) == count
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == count, timeout=120, what="every message")
        stored, dead = run.reader.count_events(), run.reader.count_dead_letters()
        assert recent <= stored <= recent + 2  # a minute's slack at the window's edge
        assert stored + dead == count
        assert run.reader.dead_letter_reasons() == {"invalid_timestamp": dead}
        assert "EVENTPIPE_MAX_PAST_DAYS" in run.reader.dead_letters(None, 1)[0].detail
    client = connect(clickhouse_dsn)
    for table in ("events", "events_by_user", "arrivals"):
        partitions = client.query(
            "SELECT uniqExact(partition) FROM system.parts WHERE active AND database = currentDatabase()"
            " AND table = {table:String}",
            parameters={"table": table},
        ).result_rows[0][0]
        assert partitions <= 26, f"{table} spans {partitions} partitions"  # 730 days touch at most 26 months


def test_events_shaped_like_the_seed_systems_with_http_dates_are_stored_at_their_time(
    broker: Broker, clickhouse_dsn: str
) -> None:
    """The seed system sends HTTP dates ("Wed, 07 May 2025 08:25:14 GMT"): all 500 were dead letters once."""
    from email.utils import format_datetime

    now = int(time.time()) // 60 * 60
    stamps = [now - 3600 * 24 * (i % 400) - i for i in range(500)]
    messages = [
        (
            "events/page_view",
            json.dumps(
                {
                    "event_id": f"seed-{i}",
                    "event_type": "page_view",
                    "timestamp": format_datetime(datetime.fromtimestamp(stamp, UTC), usegmt=True),
                    "user_id": f"u{i % 7}",
                    "page": "/pricing",
                }
            ).encode(),
        )
        for i, stamp in enumerate(stamps)
    ]
    assert messages[0][1].decode().count(" GMT") == 1
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings) as run:
        assert publish_raw(broker.url, messages) == 500
        # Acked: the whole insert is done, the id index (fed by a view after the events part) included.
        wait_until(lambda: run.metric("eventpipe_messages_acked_total") == 500, what="the 500 acks")
        assert run.reader.count_events() == 500
        assert run.reader.count_dead_letters() == 0
        missing = [i for i in range(500) if run.reader.event(f"seed-{i}") is None]
        assert missing == [], (len(missing), missing[:10], [stamps[i] for i in missing[:5]])
        stored = run.reader.event("seed-123")
        assert stored is not None and stored.timestamp_ms == stamps[123] * 1000


def test_a_retained_message_is_stored_once_not_again_at_each_subscription(broker: Broker, clickhouse_dsn: str) -> None:
    # The worker subscribes on every connect, and received every retained message again each time:
    # 10,000 stored again after a restart in an attack (copies, hidden in reads but kept by the feed).
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_dsn)
    retained = [(f"events/state{i}", json.dumps({"event_id": f"r-{i}"}).encode()) for i in range(5)]
    with running_worker(settings) as run:
        assert publish_raw(broker.url, retained, retain=True) == 5
        wait_until(lambda: run.reader.count_events() == 5, what="the retained messages stored once")
    for fresh in (False, True):  # the same session resumed, then a worker with a session of its own
        again = settings.model_copy(update={"mqtt_client_id": "another-worker"}) if fresh else settings
        with running_worker(again) as run:
            assert publish_raw(broker.url, [("events/click", b'{"event_id": "after"}')]) == 1
            wait_until(lambda: run.metric("eventpipe_messages_received_total") >= 1, what="the next message")
            time.sleep(0.5)
            assert run.metric("eventpipe_messages_received_total") == 1, "a retained message came again"
    rows = connect(clickhouse_dsn).command("SELECT count() FROM arrivals WHERE startsWith(event_id, 'r-')")
    assert rows == 5


@pytest.mark.parametrize("stock_paho", [False, True], ids=["fast path", "paho's own"])
def test_messages_with_an_expiry_are_stored_and_counted(broker: Broker, clickhouse_dsn: str, stock_paho: bool) -> None:
    # The broker drops such a message, acknowledged, if it expires queued for the worker, and nothing counted
    # that (an attack: 1,000 acknowledged during an outage, 100 stored). Those that arrive are counted, so
    # EventpipeMessagesExpiring finds the producer before an outage does.
    expiring = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    expiring.MessageExpiryInterval = 3600
    expiring.UserProperty = [("trace", "t1")]
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    with running_worker(settings, consumer_factory=partial(Consumer, stock_paho=stock_paho)) as run:
        sent = [(f"events/e{i}", json.dumps({"event_id": f"x{i}"}).encode()) for i in range(3)]
        assert publish_raw(broker.url, sent, properties=expiring) == 3
        assert publish_raw(broker.url, [("events/plain", b'{"event_id": "y"}')]) == 1
        wait_until(lambda: run.reader.count_events() == 4, what="all 4 stored")
        assert run.metric("eventpipe_messages_expiring_total") == 3


def test_the_worker_says_how_far_its_clock_is_from_the_servers(broker: Broker, clickhouse_dsn: str) -> None:
    # A worker an hour ahead of ClickHouse (here its clock is injected; machines apart get there by a stopped
    # NTP): the server would judge its receive times by its own clock. EventpipeClockSkew reads this gauge.
    ahead = Clock(lambda: time.time_ns() // 1_000_000 + 3_600_000)
    registry = CollectorRegistry()
    settings = settings_for(broker.url, migrated(clickhouse_dsn))
    worker = Worker(settings, Writer(connect(settings.resolved_clickhouse_dsn)), IngestMetrics(registry), clock=ahead)
    worker.start()
    try:
        skew = lambda: registry.get_sample_value("eventpipe_clock_skew_seconds") or 0.0  # noqa: E731
        wait_until(lambda: not math.isnan(skew()), what="the first measurement, with the first mark")
        assert 3_599 < skew() < 3_601
    finally:
        worker.stop()
