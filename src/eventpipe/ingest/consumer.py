"""The MQTT side of the worker: a persistent QoS 1 session with manual acknowledgements."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from eventpipe.config import Settings
from eventpipe.events.contract import digest_of
from eventpipe.ingest import handshake
from eventpipe.ingest.delivery import Delivery
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.overflow import Waiting
from eventpipe.mqtt import packet, receiver
from eventpipe.mqtt.address import MqttAddress

log = logging.getLogger(__name__)
# CONNACK reasons no retry can fix: bad credentials, not authorised, banned, bad client id.
REFUSALS_NEEDING_AN_OPERATOR = frozenset({0x85, 0x86, 0x87, 0x8A})
# What MQTT v5 means by an absent Receive Maximum.
MQTT_MAX_WINDOW = 65_535
# DISCONNECT reason: another client connected with this client id (Mosquitto sends it from 2.0.15 on).
SESSION_TAKEN_OVER = 0x8E


class Consumer:
    """Receives messages into `deliver`, a list at a time; acknowledges them only when told to.

    `deliver` takes what it has room for and says how many; the consumer keeps the rest and reads
    nothing more until they are taken (`room` says when to offer again): the broker keeps what
    follows, and the connection lives on meanwhile (eventpipe.mqtt.valve).

    `stock_paho` receives through paho's own client instead of eventpipe's receive path
    (eventpipe.mqtt.receiver): slower, for a test of that fallback; a paho that the receive
    path cannot build on raises at construction otherwise."""

    def __init__(
        self,
        settings: Settings,
        deliver: Callable[[list[Delivery]], int],
        metrics: IngestMetrics,
        resumed: Callable[[int], None] = lambda _generation: None,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        *,
        stock_paho: bool = False,
    ) -> None:
        self._settings = settings
        # The receive time of a burst; the worker's clock also knows a burst is on its way (ingest.worker).
        self._clock = clock
        self._address = MqttAddress.parse(settings.mqtt_url)
        # Derived once (an HMAC): subscribed to, and named in errors, at every connect.
        self._subscription = settings.subscription
        self._deliver = deliver
        self._resumed = resumed
        self._metrics = metrics
        # The generation changes when a connection ends, the link is up only
        # between CONNACK and the drop: acks go out only for messages of the
        # live connection, and never while paho reconnects (they would precede
        # CONNECT, or hit packet ids of the next connection).
        # Re-entrant: if paho's loop thread is gone, ack() writes inline and a
        # socket error calls _on_disconnect on this same thread.
        self._lock = threading.RLock()
        self._generation = 1
        self._last_held: tuple[int, int] | None = None
        # The live session's expiry, as asked for or as the broker cut it in CONNACK.
        self._expiry_s = settings.mqtt_session_expiry_s
        self._link_up = False
        self._accepting = True
        self.failure: str | None = None
        self._connected = threading.Event()
        # Whether the broker had kept the session at the last connection.
        self.resumed = False
        self._looping = False
        # Received, not yet taken: while any came on the live connection, the socket is not read.
        self._waiting = Waiting(deliver, settings.max_held_bytes, metrics)
        self._client = receiver.receiving_client(
            self._address,
            settings.mqtt_session_id,
            self._on_burst,
            ca_file=settings.mqtt_ca_file,
            stock=stock_paho,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        # Open again once stopping: what is read then is not taken (QoS 1 stays with the broker), and paho's
        # own keepalive runs, so a dead broker cannot hold the stop past its deadline.
        self._client.full = lambda: self._accepting and self._waiting.holds_from(self._generation)
        self._client.on_room = self._offer
        # Bounded backoff between reconnect attempts, done by paho's loop thread.
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)

    def start(self, last_held: tuple[int, int] | None = None) -> None:
        """Connect, resuming the session; `last_held`: when this worker last held it and its expiry then
        (ingest.mark's session marks), None if never or unknown, for a missing session at the first connect."""
        self._last_held = last_held
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.mqtt_session_expiry_s
        props.ReceiveMaximum = self._settings.mqtt_receive_maximum
        # MQTT 5 3.1.2.25: the broker may not send the worker a larger packet, so
        # no broker makes it read one whole, whatever producers send.
        props.MaximumPacketSize = limit = packet.worker_limit(self._settings.max_payload_bytes)
        self._metrics.max_packet.set(limit)
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
        self._looping = True

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def session_expiry_s(self) -> int | None:
        """While the connection is up (from its CONNACK to its end), its session's expiry; else None."""
        return self._expiry_s if self._link_up else None

    @property
    def network_alive(self) -> bool:
        """False once paho's network thread has died (an exception in a callback ends it):
        then nothing reads the socket or sends acks, while every gauge still looks healthy."""
        if not self._looping:
            return True  # not started, or stopped on purpose
        return receiver.network_alive(self._client)

    def stop_accepting(self) -> None:
        """From now on, messages stay unacknowledged in the broker for the next session."""
        self._accepting = False

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """Acknowledge committed messages in receive order; return how many were sent.

        A message from an earlier connection is not acked: the broker resends it
        on the new one (same session), and that copy gets acked instead. Acking
        the old packet id could hit a different message that reuses it.
        """
        with self._lock:
            if not self._link_up:
                return 0
            generation = self._generation
            mids = [delivery.mid for delivery in deliveries if delivery.qos and delivery.generation == generation]
            receiver.acknowledge(self._client, mids)
        return len(mids)

    def room(self) -> None:
        """From the thread that made room: offer what is waiting now, not at the valve's next tick."""
        self._client.wake()

    def stop(self) -> None:
        qos_0 = sum(1 for item in self._waiting if item.qos == 0)
        if qos_0:
            log.warning(
                "stopped with %d QoS 0 messages received and not taken: they are gone (QoS 1 comes again)", qos_0
            )
        self._looping = False
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._metrics.connected.set(0)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._address, reason)
            if reason.value in REFUSALS_NEEDING_AN_OPERATOR:
                self.failure = f"the broker at {self._address} refused the connection: {reason}"
            return
        handshake.check_window(self._settings, self._metrics, getattr(props, "ReceiveMaximum", MQTT_MAX_WINDOW))
        handshake.check_packet_limit(self._settings, self._metrics, getattr(props, "MaximumPacketSize", None))
        granted = getattr(props, "SessionExpiryInterval", None)
        with self._lock:
            self._expiry_s = self._settings.mqtt_session_expiry_s if granted is None else int(granted)
            self._link_up = True
            generation = self._generation
        if generation > 1:
            self._metrics.reconnects.inc()
        log.info(
            "connected to %s as %s (session %s)",
            self._address,
            self._settings.mqtt_client_id,
            "resumed" if flags.session_present else "new",
        )
        self.resumed = bool(flags.session_present)
        if flags.session_present:
            # The broker resends everything unacknowledged: held copies from
            # earlier connections that are not yet in a batch can go.
            self._waiting.let_go(generation)
            self._resumed(generation)
        else:
            handshake.check_missing_session(self._metrics, generation, self._last_held, time.time_ns() // 1_000_000)
        failure = handshake.subscribe(client, self._subscription, bool(flags.session_present))
        if failure is not None:
            self.failure = failure
            return
        self._metrics.connected.set(1)
        if flags.session_present:
            # Ready now: the broker kept this session, and it applies the SUBSCRIBE (a changed topic, a group
            # under a new name) as soon as it reads it, whatever it has queued to send. The SUBACK that says
            # so comes after what the session held, which the worker reads only as fast as it stores: behind
            # a backlog of 60 KB events, `eventpipe up` gave up waiting for it and blamed the broker. A refused
            # subscription still stops the worker when its SUBACK comes (`failure`).
            self._connected.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._lock:
            if self._link_up:
                self._generation += 1
            self._link_up = False
        self._connected.clear()
        self._metrics.connected.set(0)
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            # The id is the secret's, so whoever did this holds EVENTPIPE_MQTT_SESSION_SECRET or runs a twin
            # of this worker; reconnecting takes the session back, but what they received meanwhile is gone.
            self._metrics.session_takeovers.inc()
            log.error(
                "another client connected to %s with this worker's session id and was given its session "
                "(MQTT reason 0x8E); reconnecting to take it back",
                self._address,
            )
        elif reason.is_failure:
            log.warning("disconnected from %s: %s; reconnecting", self._address, reason)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any) -> None:
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            # Without the subscription the broker drops what producers send:
            # fatal, so the process stops and says why instead of looking healthy.
            self.failure = f"the broker refused subscription {self._subscription.shown!r}: {refused[0]}"
            log.error("%s", self.failure)
            return
        # Ready only now: before SUBACK a new session's messages would find no subscriber.
        self._connected.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Only what the receiver leaves to paho (or every message, on paho's own client: `stock_paho`).
        payload: bytes = message.payload  # type: ignore[assignment]  # struct.unpack gives bytes
        expiring = hasattr(message.properties, "MessageExpiryInterval")
        self._on_burst([(message.mid, message.qos, message.topic, payload, bool(message.dup), expiring)])

    def _offer(self) -> None:
        """On paho's network thread: hand the worker what waits, as far as it has room. Not between
        connections: until CONNACK says whether the session resumed, copies of the last one may be stale."""
        if self._accepting and self._link_up:
            self._waiting.offer()

    def _on_burst(self, burst: list[receiver.Received]) -> None:
        """Called on paho's network thread with the messages of one read, in order."""
        if not self._accepting:
            return
        # One clock reading for the burst: its messages came in one read.
        received_ms = self._clock()
        arrived = time.monotonic()
        generation = self._generation
        # An oversize payload is kept only as far as its dead letter keeps it
        # (plus one byte, so it still reads as oversize): the window bounds
        # messages, EVENTPIPE_MAX_HELD_BYTES their bytes together, and this
        # each one's, so one always fits in that budget, whatever producers send.
        keep = self._settings.max_payload_bytes + 1
        self._waiting.add(
            offer=self._link_up,
            items=[
                Delivery(
                    mid,
                    qos,
                    topic,
                    payload[:keep],  # the same object when no longer than that: no copy
                    received_ms,
                    arrived,
                    generation,
                    len(payload),
                    digest_of(payload) if len(payload) > keep else "",
                )
                for mid, qos, topic, payload, *_ in burst
            ],
        )
        redelivered = sum(1 for item in burst if item[4])
        if redelivered:
            self._metrics.redelivered.inc(redelivered)
        expiring = sum(1 for item in burst if item[5])
        if expiring:
            # Not refused: this one is here. Others of its producer may expire queued, acknowledged and lost.
            self._metrics.expiring.inc(expiring)
