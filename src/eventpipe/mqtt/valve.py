"""paho's client with a read side the application can close: backpressure that keeps the connection.

The worker holds a bounded window of messages. When it is full, the client
must stop reading so that TCP pushes back and the broker keeps the rest
queued. Blocking paho's network thread did that, but took everything else
that thread does with it: no ping went out (Mosquitto closes a client silent
for 1.5 keepalives), and a connection the broker closed was not replaced
until the store took writes again, so QoS 0 sent meanwhile found no session
online and was dropped (an attack stored 150 of 940 after a broker restart
during a store outage).

Here the thread never blocks. While `full()` says so, a pass of paho's loop
reads nothing: it waits on a wake-up (`wake`, from the thread that makes
room) or a tick, offers what it holds again (`on_room`), writes what is
queued (acks of committed batches), pings at half the keepalive, and watches
the socket for the broker closing it. When the broker does, the valve opens
for the rest of that connection: what the broker sent before closing is read
(at most the socket's receive buffer), so no QoS 0 message and no DISCONNECT
reason (a session takeover) is lost, and paho then reconnects as usual. It
stays open on the next connection until messages of that connection are
waiting, so CONNACK and SUBACK are read and stale copies let go.

The paho internals used are listed here and checked by
eventpipe.mqtt.receiver.missing when the worker's client is made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from eventpipe.mqtt import poller
from eventpipe.mqtt.wire import PINGREQ, encode_length

# How long a closed valve waits for a wake-up before it offers again anyway: a lost wake-up costs this.
TICK_S = 1.0
METHODS = ("_loop", "_packet_queue", "loop_write", "want_write", "_loop_rc_handle")
ATTRIBUTES = (
    "_sock",
    "_sockpairR",
    "_sockpairW",
    "_keepalive",
    "_msgtime_mutex",
    "_last_msg_out",
    "_last_bytes_received",
    "_ping_t",
)


class Valve(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set by the application: whether it has no room for what is waiting, and a call that offers it again.
        self.full: Callable[[], bool] = lambda: False
        self.on_room: Callable[[], None] = lambda: None
        self._shut = False  # the last pass read nothing
        self._ended: object = None  # the socket the broker closed while shut: read to its end

    def wake(self) -> None:
        """From any thread: there is room, offer again now rather than at the next tick."""
        wake = self._sockpairW
        if wake is not None:
            with contextlib.suppress(OSError):  # full of wake-ups already (BlockingIOError), or closing
                wake.send(b"0")

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        sock = self._sock
        if sock is None or sock is self._ended or not self.full():
            if self._shut:
                self._reopen()
            return super()._loop(timeout)
        self._shut = True
        # Half the keepalive since anything went out (acks count): the broker allows 1.5 keepalives.
        due = self._last_msg_out + self._keepalive / 2 if self._keepalive else float("inf")
        wait = max(0.0, min(timeout, TICK_S, due - mqtt.time_func()))
        try:
            woken, ended = poller.held(self._sockpairR, sock, self.want_write(), wait)
        except (OSError, ValueError):  # closed meanwhile, as paho's own select() reads it
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if woken and self._sockpairR is not None:
            with contextlib.suppress(BlockingIOError):
                self._sockpairR.recv(10_000)
        if ended:
            self._ended = sock  # the next passes read what it sent, then paho sees the close
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self.on_room()
        if mqtt.time_func() >= due and not self.want_write():
            # Not paho's ping: paho would wait for a PINGRESP that sits unread behind the messages
            # not taken, and close the connection for its absence. Written below, which moves `due` on;
            # not while other packets wait to go, which would do as much once written.
            self._packet_queue(PINGREQ, bytes([PINGREQ]) + encode_length(0), 0, 0)
        if self.want_write():
            return self.loop_write()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _reopen(self) -> None:
        """The time shut does not count against the broker: its PINGRESP and everything else wait unread."""
        self._shut = False
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()  # paho's clock
            self._ping_t = 0
