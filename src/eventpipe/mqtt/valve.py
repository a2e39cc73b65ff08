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
queued (acks of committed batches), pings once a tick, and watches the socket
for the broker closing it. Once a tick, not at half the keepalive: a broker
that dies with more queued for the worker than the sockets hold leaves its
close stuck behind the worker's zero window, and only a packet sent to the
dead socket brings back the reset that ends it (an attack lost 300 QoS 0
messages in the 14 s it took at keepalive/2). A live broker answers each
ping with a PINGRESP it queues until the worker reads again: some 100 bytes
of the broker's memory a second while the worker stays full. When the broker does close it,
the valve opens for the rest of that connection: what the broker sent before
closing is read (at most the socket's receive buffer), so no QoS 0 message
and no DISCONNECT reason (a session takeover) is lost, and paho then
reconnects as usual. It stays open on the next connection until messages of
that connection wait, so CONNACK and SUBACK are read and stale copies let go;
what still waits is offered on every pass, shut or open.

The paho internals used are listed here and checked by
eventpipe.mqtt.receiver.missing when the worker's client is made.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from eventpipe.mqtt import poller
from eventpipe.mqtt.wire import PINGREQ, encode_length

# How long a shut valve waits for a wake-up before it offers again and pings: a lost wake-up costs this, and
# a broker gone behind unread bytes is seen within it.
TICK_S = 1.0
METHODS = ("_loop", "_packet_queue", "loop_write", "want_write", "_loop_rc_handle")
ATTRIBUTES = (
    "_sock",
    "_sockpairR",
    "_sockpairW",
    "_keepalive",
    "_msgtime_mutex",
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
        self._sent = 0.0  # monotonic time of the last tick's ping (or acks) while shut
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
            # What waits from an earlier connection while this one is read: offered on every pass, or it
            # would wait for the next message to arrive.
            self.on_room()
            return super()._loop(timeout)
        if not self._shut:
            self._shut = True
            self._bound_silence(sock)
        try:
            woken, ended = poller.held(self._sockpairR, sock, self.want_write(), min(timeout, TICK_S))
        except (OSError, ValueError):  # closed meanwhile, as paho's own select() reads it
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if woken and self._sockpairR is not None:
            with contextlib.suppress(BlockingIOError):
                self._sockpairR.recv(10_000)
        if ended:
            self._ended = sock  # the next passes read what it sent, then paho sees the close
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self.on_room()
        now = time.monotonic()
        if now - self._sent >= TICK_S:
            self._sent = now
            if not self.want_write():  # packets waiting to go (acks) do as much once written
                # Not paho's ping, which would wait for a PINGRESP that sits unread behind the messages not
                # taken, and close the connection for its absence.
                self._packet_queue(PINGREQ, bytes([PINGREQ]) + encode_length(0), 0, 0)
        if self.want_write():
            return self.loop_write()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _bound_silence(self, sock: Any) -> None:
        """A broker host gone without a reset (a partition, a host powered off) answers the pings with nothing,
        and paho's own keepalive, which would see that, cannot run while shut: the kernel ends the connection
        once a ping stays unacknowledged 1.5 keepalives, as the broker would, rather than after its own
        retransmissions (some 15 minutes). Linux only (TCP_USER_TIMEOUT); for the life of the connection."""
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if option is not None and self._keepalive:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, option, int(self._keepalive * 1500))

    def _reopen(self) -> None:
        """The time shut does not count against the broker: its PINGRESP and everything else wait unread."""
        self._shut = False
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()  # paho's clock
            self._ping_t = 0
