"""The MQTT side of the worker: a persistent QoS 1 session with manual acknowledgements."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from eventpipe.broker.address import MqttAddress
from eventpipe.broker.connection import make_client
from eventpipe.config import Settings
from eventpipe.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)
# What MQTT v5 means by an absent Receive Maximum.
MQTT_MAX_WINDOW = 65_535


class Delivery(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ms: int  # wall clock, stored as received_at
    arrived: float  # monotonic, for batch age
    generation: int  # which connection it came on; acks go only to the current one


class Consumer:
    """Receives messages into `deliver`; acknowledges them only when told to."""

    def __init__(self, settings: Settings, deliver: Callable[[Delivery], None], metrics: IngestMetrics) -> None:
        self._settings = settings
        self._address = MqttAddress.parse(settings.mqtt_url)
        self._deliver = deliver
        self._metrics = metrics
        self._generation = 0
        self._accepting = True
        self._connected = threading.Event()
        self._client = make_client(self._address, settings.mqtt_client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        # Bounded backoff between reconnect attempts, done by paho's loop thread.
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.mqtt_session_expiry_s
        props.ReceiveMaximum = self._settings.mqtt_receive_maximum
        # clean_start=False on every connect, the first included: a restarted
        # worker must resume its session and get what was not acknowledged.
        self._client.connect_async(
            self._address.host,
            self._address.port,
            keepalive=self._settings.mqtt_keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop_accepting(self) -> None:
        """From now on, messages stay unacknowledged in the broker for the next session."""
        self._accepting = False

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """Acknowledge committed messages in receive order; return how many were sent.

        A message from an earlier connection is not acked: the broker resends it
        on the new one (same session), and that copy gets acked instead. Acking
        the old packet id could hit a different message that reuses it.
        """
        generation = self._generation
        sent = 0
        for delivery in deliveries:
            if delivery.qos and delivery.generation == generation:
                self._client.ack(delivery.mid, delivery.qos)
                sent += 1
        return sent

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._metrics.connected.set(0)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._address, reason)
            return
        self._check_window(getattr(props, "ReceiveMaximum", MQTT_MAX_WINDOW))
        if self._generation:
            self._metrics.reconnects.inc()
        self._generation += 1
        log.info(
            "connected to %s as %s (session %s)",
            self._address,
            self._settings.mqtt_client_id,
            "resumed" if flags.session_present else "new",
        )
        client.subscribe(self._settings.subscription, options=SubscribeOptions(qos=1))
        self._connected.set()
        self._metrics.connected.set(1)

    def _check_window(self, broker_window: int) -> None:
        # Mosquitto advertises max_inflight_messages as its Receive Maximum, and
        # once acks flow it sends up to that many unacked messages, whatever
        # the client asked for: the worker's memory bound is the broker's number.
        self._metrics.broker_window.set(broker_window)
        ours = self._settings.mqtt_receive_maximum
        if broker_window != ours:
            log.error(
                "the broker's in-flight window is %d (Mosquitto: max_inflight_messages) but the worker's is %d "
                "(EVENTPIPE_MQTT_RECEIVE_MAXIMUM): set both to the same value, or the worker %s",
                broker_window,
                ours,
                "may hold that many more messages in memory" if broker_window > ours else "waits on its batch timer",
            )

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        self._metrics.connected.set(0)
        if reason.is_failure:
            log.warning("disconnected from %s: %s; reconnecting", self._address, reason)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any) -> None:
        for reason in reasons:
            if reason.is_failure:
                log.error("broker refused subscription %s: %s", self._settings.subscription, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._accepting:
            return
        self._deliver(
            Delivery(
                message.mid,
                message.qos,
                message.topic,
                message.payload,  # type: ignore[arg-type]  # struct.unpack gives bytes
                time.time_ns() // 1_000_000,
                time.monotonic(),
                self._generation,
            )
        )
        if message.dup:
            self._metrics.redelivered.inc()
