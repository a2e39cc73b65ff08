"""Guarantee 1 across a broker restart: the worker reconnects by itself and nothing is lost."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest.assembly import assemble
from eventpipe.ingest.mark import session_mark_name
from eventpipe.mqtt.address import MqttAddress
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Mark, Writer
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.stream import Stream, wait_stored_once
from tests.support.wait import wait_until


def test_a_broker_restart_mid_stream_loses_nothing(broker: LocalBroker | ContainerBroker, clickhouse_dsn: str) -> None:
    migrate(connect(clickhouse_dsn))
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        stream = Stream(broker.url, count=6000, rate=1000)
        stream.start()
        wait_until(lambda: run.metric("eventpipe_events_stored_total") > 1000, what="traffic flowing")
        broker.restart()  # SIGTERM: Mosquitto saves sessions and queues, then starts again
        wait_until(lambda: run.metric("eventpipe_mqtt_reconnects_total") >= 1, timeout=60, what="a reconnect")
        acknowledged = stream.acknowledged()
        wait_stored_once(clickhouse_dsn, stream.prefix, acknowledged, timeout=60)
        wait_until(lambda: run.metric("eventpipe_messages_in_flight") == 0, what="nothing held")
        assert run.unreconciled() == 0


def _session_mark(dsn: str, settings: Settings) -> tuple[int, int] | None:
    url = MqttAddress.parse(settings.mqtt_url)
    name = session_mark_name(settings.mqtt_client_id, settings.mqtt_session_id, f"{url.host}:{url.port}")
    return Writer(connect(dsn)).last_mark(name)


def test_a_worker_started_on_a_broker_that_lost_its_session_counts_it_lost(
    clickhouse_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A broker whose persistence went (a volume removed, a crash between saves) while the worker was stopped
    # dropped what it queued for it, and the worker's first connect, being no reconnect, counted nothing:
    # EventpipeWorkerSessionLost could not fire. The worker's session mark says it held one a moment ago.
    migrate(connect(clickhouse_dsn))
    broker = LocalBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        settings = settings_for(broker.url, clickhouse_dsn)
        with running_worker(settings):
            wait_until(lambda: _session_mark(clickhouse_dsn, settings) is not None, what="the session's mark")
        with running_worker(settings) as run:  # the broker kept the session
            assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
        broker.stop()
        shutil.rmtree(broker.process.directory / "data")  # its persistence gone; the same address
        broker.start()
        with caplog.at_level(logging.WARNING), running_worker(settings) as run:
            assert run.metric("eventpipe_mqtt_sessions_lost_total") == 1
            assert abs(run.metric("eventpipe_mqtt_session_lost_timestamp_seconds") - time.time()) < 60
        assert "the broker had no session for this worker, last connected" in caplog.text
    finally:
        broker.stop()


def test_a_run_that_never_reached_the_broker_or_a_session_long_expired_counts_none_lost(
    clickhouse_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(connect(clickhouse_dsn))
    broker = LocalBroker(tmp_path / "mosquitto")
    settings = settings_for(broker.url, clickhouse_dsn, mqtt_session_expiry_s=60)
    # A run while the broker was down (a restart loop before it was up): marks, but no session's.
    ingest = assemble(settings, CollectorRegistry())
    ingest.start()
    time.sleep(3)  # past an idle mark
    ingest.stop()
    assert _session_mark(clickhouse_dsn, settings) is None
    broker.start()
    try:
        with running_worker(settings) as run:
            assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
        # One that held its session two minutes ago, its session lasting one: expired, said, not counted.
        expired = settings_for(broker.url, clickhouse_dsn, mqtt_session_expiry_s=60)
        then_ms = time.time_ns() // 1_000_000 - 120_000
        url = MqttAddress.parse(expired.mqtt_url)
        name = session_mark_name(expired.mqtt_client_id, expired.mqtt_session_id, f"{url.host}:{url.port}")
        Writer(connect(clickhouse_dsn)).insert_marks([Mark(name, 60, True, then_ms)])
        with caplog.at_level(logging.WARNING), running_worker(expired) as run:
            assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
        assert "longer than its session lasted (60 s" in caplog.text
    finally:
        broker.stop()
