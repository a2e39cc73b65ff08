"""Publish demo events over MQTT at a steady rate and wait for the broker's acknowledgements."""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from eventpipe.errors import BrokerError
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.producer.demo import demo_event

log = logging.getLogger(__name__)

# Unacknowledged publishes held at once; bounds the publisher's memory for any --count.
# Small on purpose: paho rescans its whole in-flight table on every PUBACK
# (measured on 10k QoS 1 events: window 100 gave 4.0k/s, 1000 gave 2.6k/s).
WINDOW = 100


@dataclass(frozen=True)
class PublishReport:
    published: int
    acknowledged: int
    seconds: float
    # Answered with an MQTT 5 failure reason (0x87 not authorised, ...), which paho counts as published;
    # `refusal` is the first one's reason.
    refused: int = 0
    refusal: str = ""
    # Stopped by Ctrl-C before `count`: `published` is what was sent until then, each settled.
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def publish_demo(
    url: str,
    count: int,
    *,
    rate: float = 0.0,
    qos: int = 1,
    topic_prefix: str = "events",
    seed: int | None = None,
    timeout: float = 30.0,
    ca_file: Path | None = None,
) -> PublishReport:
    """Publish `count` demo events to `<topic_prefix>/<event_type>`; rate 0 means as fast as possible.
    Over mqtts:// the broker's certificate must be signed by `ca_file`, or by a CA the system trusts."""
    address = MqttAddress.parse(url)
    client = make_client(address, f"eventpipe-publish-{uuid.uuid4().hex[:8]}", ca_file=ca_file)
    client.max_inflight_messages_set(WINDOW)
    connected = threading.Event()
    # A broker that drops the connection before CONNACK (a TLS port spoken to in
    # plain MQTT does) would otherwise be waited for until the timeout.
    closed = threading.Event()
    answer: list[object] = []

    def on_connect(_client: object, _userdata: object, _flags: object, reason: object, _properties: object) -> None:
        answer.append(reason)
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: closed.set()
    refused: dict[int, str] = {}

    def on_publish(_client: object, _userdata: object, mid: int, reason: object, _properties: object) -> None:
        # Called before the message is marked published: _settle reads it after the wait.
        if getattr(reason, "is_failure", False):
            refused[mid] = str(reason)

    client.on_publish = on_publish
    try:
        client.connect(address.host, address.port, keepalive=30)
    except ssl.SSLError as exc:
        hint = "; pass --ca-file with the CA that signed its certificate" if ca_file is None else ""
        raise BrokerError(f"TLS with the MQTT broker at {address} failed: {exc}{hint}") from exc
    except OSError as exc:
        raise BrokerError(f"cannot reach the MQTT broker at {address}: {exc}") from exc
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not connected.wait(0.05):
            if closed.is_set():
                hint = " (a TLS port? then use mqtts:// and --ca-file)" if not address.tls else ""
                raise BrokerError(f"the MQTT broker at {address} closed the connection before accepting it{hint}")
            if time.monotonic() > deadline:
                raise BrokerError(f"the MQTT broker at {address} did not accept the connection within {timeout:.0f}s")
        if getattr(answer[0], "is_failure", False):
            # Said at once: paho would go on queueing every event for a connection that never comes.
            local = address.username and address.host in ("127.0.0.1", "localhost", "::1")
            hint = " (if it is the broker of `eventpipe up`: it takes producers without a user name)" if local else ""
            raise BrokerError(f"the MQTT broker at {address} refused the connection: {answer[0]}{hint}")
        return _send(client, count, rate, qos, topic_prefix, random.Random(seed), timeout, refused)
    finally:
        client.disconnect()
        client.loop_stop()


def _send(
    client: mqtt.Client,
    count: int,
    rate: float,
    qos: int,
    prefix: str,
    rng: random.Random,
    timeout: float,
    refused: dict[int, str],
) -> PublishReport:
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    acknowledged, refusals, first = 0, 0, ""
    sent, interrupted = 0, False
    started = time.monotonic()

    def settle(wait_s: float) -> None:
        """Count the oldest pending message once answered; taken off only then, so a Ctrl-C during
        the wait leaves it to the final count."""
        nonlocal acknowledged, refusals, first
        info = pending[0]
        answered = _settle(info, wait_s)
        pending.popleft()
        if answered:
            reason = refused.pop(info.mid, None)
            acknowledged += reason is None
            refusals += reason is not None
            first = first or (reason or "")

    try:
        for index in range(count):
            if rate > 0:
                # Pace against the start time, not the previous send, so the rate holds on average.
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event_type, payload = demo_event(rng)
            info = client.publish(f"{prefix}/{event_type}", json.dumps(payload, separators=(",", ":")), qos=qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                raise BrokerError(f"publish failed: {mqtt.error_string(info.rc)}")
            pending.append(info)
            sent += 1
            while len(pending) > WINDOW:
                settle(timeout)
    except KeyboardInterrupt:
        # Ctrl-C on a long or endless run is how it is stopped: what was sent is still settled and
        # reported, so the user learns how many the broker took (a second Ctrl-C cuts that short).
        interrupted = True
    # One `timeout` for all that is left, not one each: a broker that stopped answering would hold
    # a Ctrl-C for WINDOW times it.
    deadline = time.monotonic() + timeout
    while pending:
        settle(max(0.0, deadline - time.monotonic()))
    return PublishReport(sent, acknowledged, time.monotonic() - started, refusals, first, interrupted)


def _settle(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    """Whether the broker answered the message (with an acknowledgement or a refusal)."""
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError) as exc:
        log.warning("message %d not acknowledged: %s", info.mid, exc)
        return False
    return info.is_published()
