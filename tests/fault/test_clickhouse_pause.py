"""A real ClickHouse server frozen mid-stream (docker pause): nothing acked meanwhile, everything after.

Needs the server container, so it runs where Docker answers (the GitLab
pipeline requires it there); without Docker, test_storage.py's injected outage
is the same test at the store boundary over the embedded engine.
"""

from __future__ import annotations

import time

import pytest

from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ClickHouseServer, ContainerBroker, LocalBroker, use_docker
from tests.support.stream import Stream, wait_stored_once
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(
    not use_docker(), reason="pauses a real ClickHouse container: needs Docker (the injected outage runs here)"
)


def test_a_paused_clickhouse_loses_nothing(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str, clickhouse_server: ClickHouseServer
) -> None:
    migrate(connect(clickhouse_dsn))
    settings = settings_for(broker.url, clickhouse_server.dsn("ingest-worker"))
    with running_worker(settings) as run:
        stream = Stream(broker.url, count=8000, rate=800)
        stream.start()
        wait_until(lambda: run.metric("eventpipe_events_stored_total") > 500, what="traffic flowing")
        container = clickhouse_server.container.get_wrapped_container()
        container.pause()
        try:
            time.sleep(1)
            acked = run.metric("eventpipe_messages_acked_total")
            time.sleep(5)
            assert run.metric("eventpipe_messages_acked_total") == acked, "acked while ClickHouse was frozen"
            assert run.metric("eventpipe_messages_in_flight") <= settings.mqtt_receive_maximum
        finally:
            container.unpause()
        acknowledged = stream.acknowledged()
        wait_stored_once(clickhouse_dsn, stream.prefix, acknowledged, timeout=120)
