"""Hostile local clients of the broker `eventpipe up` starts: it listens on loopback, and producers there
are anonymous, so any process on the machine is a client.

With no ACL, one could subscribe to every event and never read, or leave a session behind, and make the
broker hold memory and disk without bound (an attack: 5 unread subscribers and 120 MB of events took it
from 9 to 704 MiB; a session left behind kept 240 MB in mosquitto.db across restarts). It could also read
every event and publish the worker's probes. Producers now may only publish, and the worker signs in.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.mqtt.wire import DISCONNECT
from eventpipe.process import pid_running, rss_bytes
from tests.support.mqtt import publish_raw, unreleased
from tests.support.stack import Up, count_rows, ready, run_eventpipe
from tests.support.wait import wait_until

# 2,000 events of 10 KB: 20 MB that a left session would keep in the broker's persistence file.
COUNT, PAD = 2_000, 10_000


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with ready(tmp_path / "data", {}) as stack:
        yield stack


class Listener:
    """An anonymous client subscribed to `topic_filter`; persistent (`expiry_s`) sessions stay when it leaves."""

    def __init__(self, url: str, topic_filter: str, expiry_s: int = 0, user: tuple[str, str] | None = None) -> None:
        address = MqttAddress.parse(url)
        self.client = make_client(address, f"local-{uuid.uuid4().hex[:8]}")
        if user:
            self.client.username_pw_set(*user)
        self.received = 0
        self.connack: ReasonCode | None = None
        granted = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: setattr(self, "connack", rc)
        self.client.on_subscribe = lambda *_args: granted.set()
        self.client.on_message = lambda *_args: setattr(self, "received", self.received + 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry_s
        self.client.connect(address.host, address.port, clean_start=False, properties=props)
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, timeout=10, what="the CONNACK")
        if not self.connack.is_failure:
            self.client.subscribe(topic_filter, qos=1)
            assert granted.wait(10), "no SUBACK"

    def leave(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_answers(url: str, messages: list[tuple[str, bytes]]) -> list[int]:
    """Each message's PUBACK reason code, published anonymously with MQTT 5."""
    address = MqttAddress.parse(url)
    client = make_client(address, f"producer-{uuid.uuid4().hex[:8]}")
    answers: dict[int, int] = {}
    client.on_publish = lambda _c, _u, mid, rc, _p: answers.__setitem__(mid, rc.value)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        mids = [client.publish(topic, payload, qos=1).mid for topic, payload in messages]
        wait_until(lambda: len(answers) == len(mids), timeout=30, what="every PUBACK")
        return [answers[mid] for mid in mids]
    finally:
        client.disconnect()
        client.loop_stop()


def events(count: int, event_type: str = "click", pad: int = 0) -> list[tuple[str, bytes]]:
    prefix = uuid.uuid4().hex[:8]
    return [
        (f"events/{event_type}", json.dumps({"event_id": f"{prefix}-{i}", "properties": {"pad": "x" * pad}}).encode())
        for i in range(count)
    ]


def test_a_local_subscriber_reads_nothing_and_a_session_left_behind_keeps_nothing(up: Up) -> None:
    left = Listener(up.mqtt_url, "events/#", expiry_s=7 * 86_400)
    left.leave()
    reader = Listener(up.mqtt_url, "events/#")
    try:
        assert publish_raw(up.mqtt_url, events(COUNT, pad=PAD)) == COUNT
        wait_until(lambda: up.metric("eventpipe_events_stored_total") >= COUNT, timeout=60, what="events stored")
        assert reader.received == 0, "a local anonymous client read the events"
    finally:
        reader.leave()
    assert up.stop(signal.SIGTERM) == 0, up.output()
    # Saved at the stop: what is queued for every session, the one left behind included.
    database = up.data_dir / "mosquitto" / "data" / "mosquitto.db"
    assert database.stat().st_size < 1_000_000, f"the broker keeps {database.stat().st_size} bytes"
    assert count_rows(up.data_dir) == COUNT


def test_a_local_client_cannot_forge_the_workers_probe_and_can_publish_events(up: Up) -> None:
    answers = publish_answers(up.mqtt_url, [("events/_probe", b'{"event_id": "forged"}'), *events(3)])
    assert answers == [0x87, 0, 0, 0], "0x87: not authorised"
    wait_until(lambda: up.metric("eventpipe_events_stored_total") >= 3, timeout=30, what="the events stored")


def publish_retained(url: str, count: int) -> tuple[int, int | None]:
    """Publish `count` retained 10 KB events, each on a topic of its own and each once the one before is
    acknowledged, until the broker disconnects: (how many it acknowledged, its DISCONNECT's reason code).
    One at a time, so that the client reads the DISCONNECT rather than fails writing after it (0x80)."""
    address = MqttAddress.parse(url)
    client = make_client(address, f"retainer-{uuid.uuid4().hex[:8]}")
    acked: list[int] = []
    reasons: list[int] = []
    client.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mid)
    client.on_disconnect = lambda _c, _u, _f, rc, _p: reasons.append(rc.value)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for index, (_topic, payload) in enumerate(events(count, pad=PAD)):
            client.publish(f"events/retained-{index}", payload, qos=1, retain=True)
            wait_until(
                lambda sent=index + 1: len(acked) >= sent or reasons, timeout=30, what="its PUBACK or a DISCONNECT"
            )
            if reasons:
                break
        return len(acked), (reasons[0] if reasons else None)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_retained_message_is_refused_so_the_broker_keeps_none(up: Up) -> None:
    # Kept once per topic for ever (the worker never asks for them: README), retained messages on topics of
    # a local client's making filled the broker's memory and its persistence without bound.
    acked, reason = publish_retained(up.mqtt_url, 500)
    assert (acked, reason) == (0, 0x9A), "0x9A: retain not supported"
    assert publish_raw(up.mqtt_url, events(3)) == 3, "an honest producer was refused"
    assert up.stop(signal.SIGTERM) == 0, up.output()
    database = up.data_dir / "mosquitto" / "data" / "mosquitto.db"
    assert database.stat().st_size < 100_000, f"the broker keeps {database.stat().st_size} bytes"


def test_a_qos_2_message_is_refused_so_a_client_cannot_make_the_broker_hold_them(up: Up) -> None:
    # README's contract is QoS 1. A QoS 2 message is held by the broker until its publisher releases it,
    # up to the in-flight window per connection (40,000 here), with no bound on connections.
    pid = pid_running("-c", str(up.data_dir.resolve() / "mosquitto" / "mosquitto.conf"))
    assert pid is not None
    before = rss_bytes(pid)
    packet, body = unreleased(up.mqtt_url, 1_000)
    grown = rss_bytes(pid) - before
    assert (packet, body[:1]) == (DISCONNECT, b"\x9b"), "0x9B: QoS not supported"
    assert grown < 20 * 2**20, f"the broker grew by {grown / 2**20:.0f} MiB"
    assert publish_raw(up.mqtt_url, events(3)) == 3, "an honest producer was refused"


def test_the_worker_signs_in_with_a_password_no_one_else_can_read(up: Up) -> None:
    directory = up.data_dir / "mosquitto"
    for name in ("passwd", "acl"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert "u'ingest')" in (directory / "mosquitto.log").read_text(), "the worker did not sign in"
    intruder = Listener(up.mqtt_url.replace("mqtt://", "mqtt://ingest:guess@"), "events/#")
    try:
        assert intruder.connack is not None and intruder.connack.is_failure
    finally:
        intruder.leave()
    assert up.stop(signal.SIGTERM) == 0
    assert "ingest:" not in up.output()


def test_a_producer_that_sends_a_user_name_is_told_the_broker_refused_it(up: Up) -> None:
    # It printed "published 3 events ... 0 acknowledged" and paho's "not currently connected" warnings.
    url = up.mqtt_url.replace("mqtt://", "mqtt://producer:S3cretPw@")
    done = run_eventpipe("publish", "--count", "3", env={**os.environ, "EVENTPIPE_MQTT_URL": url})
    assert done.returncode != 0
    assert "refused the connection: Not authorized" in done.stderr, done.stderr
    assert "without a user name" in done.stderr
    assert "S3cretPw" not in done.stderr + done.stdout
