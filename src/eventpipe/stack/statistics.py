"""The broker's own statistics ($SYS) as Prometheus metrics: `eventpipe up`'s, and compose's exporter.

Under the names sapcc/mosquitto-exporter gave them (compose ran it until it was replaced by this, which
runs on arm64 without emulation), so that the same alerts (EventpipeBrokerBacklog, EventpipeBrokerMemoryHigh,
EventpipeBrokerDroppingMessages, the two session alerts), the completeness SLI's broker drops and the
broker dashboard read both stacks.

`up`'s broker refuses retained messages (stack/access.py), and Mosquitto then keeps none of its $SYS
values either: it publishes each only when it changes, at most every `sys_interval` (10 s), and a
subscriber never hears what did not change since it subscribed. Hence (compose's broker retains them, and
a reader that starts late hears each value at once: there the counters are not seeded):
- the clients connected and in total change as this reader connects, so both come at its first tick;
  sessions left disconnected are their difference, which Mosquitto computes the same way;
- the counters start at 0 with the broker, which `up` starts just before: each is 0 until told
  otherwise, so a first drop, or the first messages, show as an increase (a series whose first sample
  is already past them does not);
- the stored messages are reported from their first change (they may stay unknown on a broker nothing
  publishes to);
- while this reader is not subscribed, a scrape fails (Unavailable), as compose's exporter answers
  nothing without its broker: no value can go stale unseen, and EventpipeTargetDown says so. The gauges
  are forgotten when the connection ends; it comes back under a new client id after more than a tick,
  so that the clients' counts change again on its return (under its old id they need not), and the
  counters keep their last value, which a later change moves on.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client.core import GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.telemetry.exporter import Unavailable

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
# Mosquitto's sys_interval is 10 s, and a tick comes once more than that has passed: away longer, a tick
# passes without this reader, and its return changes the clients' counts again.
RETURN_AFTER_S = 12.0
# Subscribed and told nothing this long (three ticks and some): Mosquitto 2.0 grants a subscription to
# $SYS/# that its ACL denies the user and then delivers nothing, so a reader without the right served 200
# with no broker series, healthy, and nothing said why (found walking the docs).
SILENT_AFTER_S = 35.0


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
    """Subscribes to the broker's $SYS tree as `url`'s user and reports what it has heard at each collect.

    `seeded`: the counters are 0 until told otherwise (`up`, whose broker starts just before and keeps no
    $SYS values); unseeded, each appears with the broker's first word of it (compose's exporter)."""

    def __init__(
        self,
        url: str,
        ca_file: Path | None = None,
        return_after_s: float = RETURN_AFTER_S,
        *,
        seeded: bool = True,
        silent_after_s: float = SILENT_AFTER_S,
    ) -> None:
        self._address = MqttAddress.parse(url)
        self._ca_file = ca_file
        self._return_after_s = return_after_s
        self._lock = threading.Lock()
        self._values: dict[str, float] = dict.fromkeys(COUNTERS, 0.0) if seeded else {}
        self._subscribed = threading.Event()
        self._silent_after_s = silent_after_s
        self._heard = threading.Event()  # a $SYS message since this connection subscribed
        self._silent = False  # subscribed, and told nothing for silent_after_s: said once, scrapes fail
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventpipe-broker-statistics", daemon=True)

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect and subscribe on a thread of its own; whether it is subscribed within `wait_s`."""
        self._thread.start()
        return self._subscribed.wait(wait_s)

    @property
    def alive(self) -> bool:
        """Whether it still reads, or comes back to: false once an error stopped it for good."""
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._lost.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def take(self, topic: str, payload: bytes) -> None:
        """Keep what a $SYS message says, if it is one of the values reported."""
        found = reading(topic, payload)
        if found is not None:
            with self._lock:
                self._values[found[0]] = found[1]

    def forget_gauges(self) -> None:
        """What may have changed unheard: every gauge, and the clients' total they are computed from."""
        with self._lock:
            for key in (*GAUGES, TOTAL, DISCONNECTED):
                self._values.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        if not self._subscribed.is_set():
            raise Unavailable("not subscribed to the broker's $SYS statistics (yet)")
        if self._silent:
            raise Unavailable(f"subscribed to {PREFIX}#, but the broker has sent nothing (see the log)")
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

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._lost.clear()
                if self._stop.is_set():  # a stop between the loop's test and the clear
                    return
                self._connected_once()
                self._subscribed.clear()
                self.forget_gauges()
                self._stop.wait(self._return_after_s)
        except Exception:  # a CA that cannot be read, say: served as 503 from now on, and said once
            self._subscribed.clear()
            log.exception("broker statistics: stopped reading them; the broker's metrics stay unserved")

    def _connected_once(self) -> None:
        """One connection, under an id of its own, until it is lost or a stop is asked for."""
        # Random and unguessable: one a client could know, it could connect under and close this one's
        # connection again and again.
        client = make_client(self._address, f"eventpipe-statistics-{secrets.token_hex(16)}", ca_file=self._ca_file)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = lambda *_args: self._lost.set()
        # A callback's exception ended paho's thread, and with it every sign of a lost connection: values
        # of before served as current. Logged by paho instead, and the thread looked at below.
        client.suppress_exceptions = True
        # Never paho's own reconnect, under the same id: this loop's, under a new one.
        client.reconnect_delay_set(min_delay=3600, max_delay=3600)
        client.connect_async(self._address.host, self._address.port, keepalive=30)
        client.loop_start()
        loop = client._thread  # paho's network thread, to notice if it ever ends on its own
        self._heard.clear()
        self._silent = False
        subscribed_at: float | None = None
        while not self._lost.wait(1.0):
            if loop is None or not loop.is_alive():
                break
            if subscribed_at is None and self._subscribed.is_set():
                subscribed_at = time.monotonic()
            if subscribed_at is not None and not self._silent and not self._heard.is_set():
                self._silent = time.monotonic() - subscribed_at > self._silent_after_s
                if self._silent:
                    log.error(
                        "broker statistics: subscribed to %s#, but the broker has sent nothing in %.0f s: the user "
                        "of EVENTPIPE_MQTT_URL may not read $SYS/# (Mosquitto grants such a subscription and "
                        "delivers nothing), or the broker's sys_interval is 0; the broker's metrics stay unserved",
                        PREFIX,
                        self._silent_after_s,
                    )
        client.disconnect()
        client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("broker statistics: connection refused (%s); retrying", reason)
            self._lost.set()
            return
        client.subscribe(PREFIX + "#", qos=0)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            log.warning("broker statistics: subscription refused (%s); retrying", reasons)
            self._lost.set()
            return
        self._subscribed.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not self._stop.is_set():
            log.warning(
                "broker statistics: connection lost (%s); back in %.0f s, the broker's metrics unserved meanwhile",
                reason,
                self._return_after_s,
            )
        self._lost.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._heard.set()
        self.take(message.topic, bytes(message.payload))
