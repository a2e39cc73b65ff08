"""Guarantee 1 across a broker restart: the worker reconnects by itself and nothing is lost."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Mark, Writer
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker, running_broker
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


def test_a_worker_started_on_a_broker_that_lost_its_session_counts_it_lost(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A broker whose persistence is gone (a volume removed, a crash between saves) while the worker was
    # stopped dropped what it had queued for it, and the worker's first connect, being no reconnect,
    # counted nothing: EventpipeWorkerSessionLost could not fire. Its last mark says it ran a moment ago.
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_dsn)
    with running_worker(settings):
        pass
    with running_worker(settings) as run:  # the same broker: the session is there
        assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
    with running_broker(tmp_path / "another") as fresh, caplog.at_level(logging.WARNING):
        with running_worker(settings.model_copy(update={"mqtt_url": fresh.url})) as run:
            assert run.metric("eventpipe_mqtt_sessions_lost_total") == 1
        assert "the broker had no session for this worker, which last ran" in caplog.text
        assert "EVENTPIPE_MQTT_SESSION_EXPIRY_S" in caplog.text


def test_a_worker_that_never_ran_or_ran_before_its_session_expired_counts_no_session_lost(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(connect(clickhouse_dsn))
    first = settings_for(broker.url, clickhouse_dsn)
    with running_worker(first) as run:
        assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
    away = settings_for(broker.url, clickhouse_dsn, mqtt_session_expiry_s=60)
    last_ran_ms = time.time_ns() // 1_000_000 - 120_000  # two minutes ago, its session lasting one
    Writer(connect(clickhouse_dsn)).insert_marks([Mark(away.mqtt_client_id, last_ran_ms, True, last_ran_ms)])
    with caplog.at_level(logging.WARNING), running_worker(away) as run:
        assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
    assert "longer than its session lasts (60 s, EVENTPIPE_MQTT_SESSION_EXPIRY_S)" in caplog.text
