"""The broker statistics of `eventpipe up`, read from a real Mosquitto run with `up`'s config and users.

Its broker keeps no retained messages, and Mosquitto then says each $SYS value only when it changes
(every 10 s at most): what the collector must still learn is the count of sessions left behind, which the
session alerts read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.port import free_port
from eventpipe.stack.access import Access
from eventpipe.stack.mosquitto import Mosquitto
from eventpipe.stack.statistics import RETURN_AFTER_S, Statistics
from eventpipe.telemetry.exporter import Unavailable
from tests.support.services import SESSION_EXPIRY_S, require_mosquitto
from tests.support.wait import wait_until


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


# Mosquitto's default sys_interval is 10 s: two of them, and some.
TICKS_S = 25


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(
        free_port(),
        tmp_path / "mosquitto",
        100,
        max_payload_bytes=65_536,
        session_expiry_s=SESSION_EXPIRY_S,
        access=Access("events/#", "events/_probe"),
    )
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def leave_a_session(url: str) -> None:
    """Connect anonymously asking for a session of an hour, then leave: the broker keeps it."""
    address = MqttAddress.parse(url)
    client = make_client(address, f"careless-{uuid.uuid4().hex[:8]}")
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect(address.host, address.port, clean_start=False, properties=props)
    client.loop_start()
    wait_until(client.is_connected, timeout=10, what="the CONNACK")
    client.disconnect()
    client.loop_stop()


def test_up_learns_the_sessions_left_behind_though_the_broker_keeps_no_statistics_for_it(broker: Mosquitto) -> None:
    assert broker.monitor_url is not None
    statistics = Statistics(broker.monitor_url)
    registry = CollectorRegistry()
    registry.register(statistics)
    # An anonymous client (any local process) asks for the same: the ACL gives it nothing.
    spy = make_client(MqttAddress.parse(broker.url), f"spy-{uuid.uuid4().hex[:8]}")
    heard: list[str] = []
    spy.on_message = lambda _c, _u, message: heard.append(message.topic)
    spy.connect("127.0.0.1", broker.port)
    spy.subscribe("$SYS/#")
    spy.loop_start()
    assert statistics.start(wait_s=10), "not subscribed"
    try:
        # 0 sessions left behind: Mosquitto never says it (0 since its start), yet it is known.
        wait_until(
            lambda: sample(registry, "broker_clients_disconnected") is not None, timeout=TICKS_S, what="a first tick"
        )
        assert sample(registry, "broker_clients_disconnected") == 0
        assert (sample(registry, "broker_clients_connected") or 0) >= 2  # this collector and the spy
        leave_a_session(broker.url)
        wait_until(
            lambda: sample(registry, "broker_clients_disconnected") == 1, timeout=TICKS_S, what="the session counted"
        )
        assert sample(registry, "broker_publish_messages_dropped") == 0
        assert (sample(registry, "broker_bytes_sent") or 0) > 0
    finally:
        statistics.stop()
        spy.disconnect()
        spy.loop_stop()
    assert heard == [], "an anonymous client read the broker's statistics"


def test_a_reader_cut_off_tells_nothing_until_it_is_back_and_then_nothing_stale(broker: Mosquitto) -> None:
    # Cut off, it served the values of before: a session count, a backlog that had drained meanwhile,
    # for as long as `up` ran, while its target looked healthy.
    assert broker.monitor_url is not None
    statistics = Statistics(broker.monitor_url)
    registry = CollectorRegistry()
    registry.register(statistics)
    assert statistics.start(wait_s=10), "not subscribed"
    try:
        wait_until(lambda: sample(registry, "broker_clients_disconnected") == 0, timeout=TICKS_S, what="a first tick")
        # A client under the reader's own id (read from the broker's log) takes its connection over.
        reader = re.search(r"as (eventpipe-statistics-\w+) \(", broker.log_file.read_text())
        assert reader is not None
        usurper = make_client(MqttAddress.parse(broker.url), reader.group(1))
        usurper.connect("127.0.0.1", broker.port)
        usurper.loop_start()
        wait_until(lambda: unavailable(registry), timeout=10, what="the scrape refused")
        usurper.disconnect()
        usurper.loop_stop()
        leave_a_session(broker.url)  # while it is away: unheard
        seen = wait_until(
            lambda: None if unavailable(registry) else sample(registry, "broker_clients_disconnected"),
            timeout=RETURN_AFTER_S + TICKS_S,
            what="the reader back and told the sessions",
        )
        assert seen == 1, "a count of before the cut served as current"
    finally:
        statistics.stop()


def unavailable(registry: CollectorRegistry) -> bool:
    try:
        registry.get_sample_value("broker_bytes_sent")
    except Unavailable:
        return True
    return False


def test_a_reader_the_broker_tells_nothing_says_so_and_its_scrapes_fail(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker's user may not read $SYS/#: Mosquitto grants its subscription all the same and sends nothing.
    # It served 200 without a broker series, healthy, and nothing said why.
    deaf, heard = Statistics(broker.worker_url, silent_after_s=3), Statistics(str(broker.monitor_url))
    registries = [CollectorRegistry(), CollectorRegistry()]
    for statistics, registry in zip((deaf, heard), registries, strict=True):
        registry.register(statistics)
        assert statistics.start(wait_s=10), "not subscribed"
    try:
        wait_until(lambda: unavailable(registries[0]), timeout=10, what="the silent reader's scrape refused")
        assert "but the broker has sent nothing in 3 s: the user of EVENTPIPE_MQTT_URL may not read" in caplog.text
        # One that hears its first tick is served, past the silent reader's bound.
        wait_until(lambda: sample(registries[1], "broker_clients_connected"), timeout=TICKS_S, what="a first tick")
        assert not unavailable(registries[1])
    finally:
        deaf.stop()
        heard.stop()
