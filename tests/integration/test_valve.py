"""The valve (src/eventpipe/mqtt/valve.py) against a real broker: without room, the worker's client reads nothing
more and sits still, and it takes everything once room comes."""

from __future__ import annotations

import json
import socket
import threading
import time

from prometheus_client import CollectorRegistry

from eventpipe.ingest.consumer import Consumer
from eventpipe.ingest.delivery import Delivery
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.mqtt.receiver import READ_SIZE
from tests.support.faults import Broker
from tests.support.mqtt import publish_raw
from tests.support.pipeline import settings_for
from tests.support.wait import wait_until

ROOM = 100
COUNT = 900


class Taker:
    """Stands in for the worker: room for ROOM messages until `open` is set, then for all."""

    def __init__(self) -> None:
        self.taken: list[Delivery] = []
        self.offers = 0
        self.most_waiting = 0  # the most messages offered at once: what the consumer held
        self.left = 0  # what the last offer left waiting
        self.open = threading.Event()

    def __call__(self, waiting: list[Delivery]) -> int:
        self.offers += 1
        self.most_waiting = max(self.most_waiting, len(waiting))
        count = len(waiting) if self.open.is_set() else max(0, min(len(waiting), ROOM - len(self.taken)))
        self.taken.extend(waiting[:count])
        self.left = len(waiting) - count
        return count


def test_without_room_the_consumer_reads_nothing_more_and_does_not_spin_then_takes_everything(broker: Broker) -> None:
    url = broker.url
    taker = Taker()
    settings = settings_for(url, "chdb:///unused")
    registry = CollectorRegistry()
    consumer = Consumer(settings, taker, IngestMetrics(registry))
    consumer.start()
    try:
        assert consumer.wait_connected(10)
        # Fewer than the broker's window (1,000), which it fills without waiting for acks, of which there are none.
        pad = "x" * 1000
        messages = [("events/valve", json.dumps({"event_id": f"v-{i}", "pad": pad}).encode()) for i in range(COUNT)]
        assert publish_raw(url, messages) == COUNT
        wait_until(lambda: len(taker.taken) == ROOM, what="the room filled")
        time.sleep(0.5)  # the rest of the read in hand is offered too
        offers = taker.offers
        time.sleep(3)
        # A spinning loop would offer thousands of times; the valve offers once a tick (1 s) when not woken.
        # Two passes a tick: the ping it queues wakes the next one.
        assert taker.offers - offers <= 10, f"{taker.offers - offers} offers in 3 s"
        assert len(taker.taken) == ROOM
        # A broker host gone without a reset is seen after 1.5 keepalives unanswered, as the broker sees the worker.
        sock = consumer._client._sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == settings.mqtt_keepalive_s * 1500
        # Held back: one socket read (64 KiB, some 60 of these messages), not the 800 the broker sent.
        assert taker.most_waiting <= READ_SIZE // 1000 + 1, taker.most_waiting
        # What waits shows, so a worker stuck full is seen as such.
        assert registry.get_sample_value("eventpipe_messages_waiting") == taker.left > 0
        taker.open.set()
        consumer.room()
        wait_until(lambda: len(taker.taken) == COUNT, timeout=30, what="all taken once room came")
        assert [json.loads(item.payload)["event_id"] for item in taker.taken] == [f"v-{i}" for i in range(COUNT)]
        assert registry.get_sample_value("eventpipe_messages_waiting_bytes") == 0
    finally:
        consumer.stop()


def test_a_session_resumed_behind_a_backlog_it_cannot_take_yet_is_ready_at_once(broker: Broker) -> None:
    # On a resumed session the broker sends what the session held first, and the SUBACK queues behind it,
    # which the worker reads only as fast as it stores: `eventpipe up` restarted after a backlog of 60 KB
    # events waited 15 s for that SUBACK and exited 2 blaming the broker, three times over.
    # The broker kept the subscription with the session: the worker is ready at CONNACK.
    settings = settings_for(broker.url, "chdb:///unused")
    first = Consumer(settings, Taker(), IngestMetrics(CollectorRegistry()))
    first.start()
    assert first.wait_connected(10)
    first.stop()
    pad = "x" * 1000
    messages = [("events/valve", json.dumps({"event_id": f"r-{i}", "pad": pad}).encode()) for i in range(COUNT)]
    assert publish_raw(broker.url, messages) == COUNT
    taker = Taker()
    again = Consumer(settings, taker, IngestMetrics(CollectorRegistry()))
    again.start()
    try:
        assert again.wait_connected(5), f"not ready, having taken {len(taker.taken)} of the backlog"
        wait_until(lambda: len(taker.taken) == ROOM, what="the room filled")
        taker.open.set()
        again.room()
        wait_until(lambda: len(taker.taken) == COUNT, timeout=30, what="the whole backlog taken once room came")
    finally:
        again.stop()
