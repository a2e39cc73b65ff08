"""Guarantee 1 across a broker restart: the worker reconnects by itself and nothing is lost."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.host import free_port
from eventpipe.ingest.assembly import assemble
from eventpipe.ingest.mark import SESSION_SUFFIX
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
    # A broker whose persistence went (a volume removed, a crash between saves) while the worker was stopped
    # dropped what it queued for it, and the worker's first connect, being no reconnect, counted nothing:
    # EventpipeWorkerSessionLost could not fire. The worker's session mark says it held one a moment ago.
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_dsn)
    with running_worker(settings) as run:
        wait_until(
            lambda: Writer(connect(clickhouse_dsn)).last_mark(settings.mqtt_client_id + SESSION_SUFFIX) is not None,
            what="the session's mark",
        )
    with running_worker(settings) as run:  # the same broker: the session is there
        assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
    with running_broker(tmp_path / "another") as fresh, caplog.at_level(logging.WARNING):
        with running_worker(settings.model_copy(update={"mqtt_url": fresh.url})) as run:
            assert run.metric("eventpipe_mqtt_sessions_lost_total") == 1
            assert abs(run.metric("eventpipe_mqtt_session_lost_timestamp_seconds") - time.time()) < 60
        assert "the broker had no session for this worker, last connected" in caplog.text


def test_a_run_that_never_reached_the_broker_or_a_session_long_expired_counts_none_lost(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_dsn, mqtt_session_expiry_s=60)
    # A run whose broker never answered (a restart loop before the broker was up): marks, but no session's.
    unreachable = settings.model_copy(update={"mqtt_url": f"mqtt://127.0.0.1:{free_port()}"})
    ingest = assemble(unreachable, CollectorRegistry())
    ingest.start()
    time.sleep(3)  # past an idle mark
    ingest.stop()
    with running_worker(settings) as run:
        assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
    # One that held its session two minutes ago, its session lasting one: expired, said, not counted.
    expired = settings_for(broker.url, clickhouse_dsn, mqtt_session_expiry_s=60)
    then_ms = time.time_ns() // 1_000_000 - 120_000
    Writer(connect(clickhouse_dsn)).insert_marks([Mark(expired.mqtt_client_id + SESSION_SUFFIX, 0, True, then_ms)])
    with caplog.at_level(logging.WARNING), running_worker(expired) as run:
        assert run.metric("eventpipe_mqtt_sessions_lost_total") == 0
    assert "longer than its session lasts (60 s" in caplog.text
