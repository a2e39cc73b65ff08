"""The broker's own statistics ($SYS) as Prometheus metrics, for `eventpipe up`: what compose's exporter does.

Under the names compose's exporter (sapcc/mosquitto-exporter) gives them, so that the same alerts
(EventpipeBrokerBacklog, EventpipeBrokerDroppingMessages, the two session alerts), the completeness SLI's
broker drops and the broker dashboard read both stacks; without it they were compose-only.

`up`'s broker refuses retained messages (stack/access.py), and Mosquitto then keeps none of its $SYS
values either: it publishes each only when it changes, at most every `sys_interval` (10 s), and a
subscriber never hears what did not change since it subscribed. Hence:
- the clients connected and in total change as this collector connects, so both come at its first
  tick; sessions left disconnected are their difference, which Mosquitto computes the same way;
- the drop counter starts at 0 with the broker, which `up` starts just before: it is 0 until told
  otherwise, so a first drop shows as an increase (a first sample that is already 1 does not);
- the other counters move at every tick (this collector's own traffic moves bytes sent);
- the stored messages are reported from their first change: a count that never moves since the broker
  started (nothing published, nothing delivered) stays unknown.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client.core import GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client

log = logging.getLogger(__name__)

PREFIX = "$SYS/broker/"
# Counters, untyped as the exporter's are (a counter family would add `_total` to the names the rules use).
COUNTERS = {
    "publish/messages/dropped": "PUBLISH messages dropped for a full queue or in-flight window since the start",
    "publish/messages/received": "PUBLISH messages received since the broker started",
    "publish/messages/sent": "PUBLISH messages sent since the broker started",
    "bytes/received": "Bytes received since the broker started",
    "bytes/sent": "Bytes sent since the broker started",
}
GAUGES = {
    "clients/connected": "Clients connected now",
    "store/messages/count": "Messages the broker holds now (queued, in flight or retained)",
    "store/messages/bytes": "Bytes of the payloads the broker holds now",
}
# Read to compute sessions left disconnected; not exported (the exporter's `clients_total` is no gauge).
TOTAL = "clients/total"
DISCONNECTED = "clients/disconnected"
# Bounded: a payload is a number Mosquitto printed.
LONGEST_PAYLOAD = 32


def metric_name(key: str) -> str:
    """The exporter's name for `$SYS/broker/<key>`: broker_ and the topic's levels joined by `_`."""
    return "broker_" + key.replace("/", "_")


def reading(topic: str, payload: bytes) -> tuple[str, float] | None:
    """(key, value) of a $SYS message this collector keeps, or None: another topic, or no number."""
    if not topic.startswith(PREFIX) or len(payload) > LONGEST_PAYLOAD:
        return None
    key = topic[len(PREFIX) :]
    if key not in COUNTERS and key not in GAUGES and key not in (TOTAL, DISCONNECTED):
        return None
    try:
        value = float(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return (key, value) if math.isfinite(value) else None


class Statistics(Collector):
    """Subscribes to the broker's $SYS tree as `url`'s user and reports what it has heard at each collect."""

    def __init__(self, url: str, ca_file: Path | None = None) -> None:
        self._address = MqttAddress.parse(url)
        # Random and unguessable: a client connecting under a known id would close this one, again and again.
        self._client = make_client(self._address, f"eventpipe-statistics-{secrets.token_hex(16)}", ca_file=ca_file)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._values: dict[str, float] = {"publish/messages/dropped": 0.0}

    def start(self) -> None:
        self._client.connect_async(self._address.host, self._address.port, keepalive=60)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def take(self, topic: str, payload: bytes) -> None:
        """Keep what a $SYS message says, if it is one of the values reported."""
        found = reading(topic, payload)
        if found is not None:
            with self._lock:
                self._values[found[0]] = found[1]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = dict(self._values)
        if TOTAL in values and "clients/connected" in values:
            values[DISCONNECTED] = values[TOTAL] - values["clients/connected"]
        for key, help_text in COUNTERS.items():
            if key in values:
                yield UnknownMetricFamily(metric_name(key), help_text + " ($SYS).", value=values[key])
        for key, help_text in (*GAUGES.items(), (DISCONNECTED, "Sessions kept for clients not connected now")):
            if key in values:
                yield GaugeMetricFamily(metric_name(key), help_text + " ($SYS).", value=values[key])

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("broker statistics: connection refused (%s); retrying", reason)
            return
        client.subscribe(PREFIX + "#", qos=0)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.take(message.topic, bytes(message.payload))
