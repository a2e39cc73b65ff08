"""Guarantee 1 across a broker restart: the worker reconnects by itself and nothing is lost."""

from __future__ import annotations

from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
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
