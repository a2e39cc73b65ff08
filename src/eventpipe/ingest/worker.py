"""The worker loop: batch what the consumer delivers, commit it, then acknowledge it.

Threads: paho's network thread calls `_deliver`; one flusher thread commits
(ingest.commit: parse, write, retry) and acks. Nothing is acked before the
batch holding it is committed, so a crash at any point leaves every uncommitted
message with the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from eventpipe.config import Settings
from eventpipe.ingest.beacon import Beacon
from eventpipe.ingest.clock import Clock
from eventpipe.ingest.commit import commit
from eventpipe.ingest.consumer import Consumer
from eventpipe.ingest.delivery import Delivery, held_size
from eventpipe.ingest.limit import limits_from
from eventpipe.ingest.mark import session_mark_name
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.policy import BatchPolicy, leading
from eventpipe.ingest.retry import Abandoned, Retrier
from eventpipe.mqtt.address import MqttAddress
from eventpipe.store.writer import Writer

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        metrics: IngestMetrics,
        consumer_factory: Callable[..., Consumer] = Consumer,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        # Receive times and marks from one clock that never goes back (ingest.clock).
        self._clock = clock or Clock()
        self._writer = writer
        self._metrics = metrics
        self._limits = limits_from(settings)
        self._policy = BatchPolicy(settings.batch_max_rows, settings.batch_max_ms / 1000, settings.max_held_bytes // 2)
        self._retrier = Retrier(settings, writer.takes_writes, metrics)
        # Messages held (queued plus being committed) never exceed the window,
        # whatever the broker does: Mosquitto 2.0 was seen sending past the
        # client's Receive Maximum once acks flow, so the worker enforces it.
        self._capacity = settings.mqtt_receive_maximum
        self._held = 0
        # ... nor their payloads these many bytes, however large they are.
        self._max_held_bytes = settings.max_held_bytes
        self._held_bytes = 0
        metrics.max_held_bytes.set(settings.max_held_bytes)
        self._items: list[Delivery] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._clean = True
        self._failed: BaseException | None = None
        broker = MqttAddress.parse(settings.mqtt_url)
        session = session_mark_name(settings.mqtt_client_id, settings.mqtt_session_id, f"{broker.host}:{broker.port}")
        self._beacon = Beacon(settings.mqtt_client_id, session, writer, self._clock, metrics)
        self._marker = self._beacon.marker
        self._thread = threading.Thread(target=self._run, name="eventpipe-flusher", daemon=True)
        # The receive time of the oldest burst the network thread is handing over, until all of it is held.
        self._handing_ms: int | None = None
        self._wanting = False  # the consumer holds messages it could not hand over: tell it of room
        self._idle_before_ms = 0
        self.consumer = consumer_factory(settings, self._deliver, metrics, self._release_stale, clock=self._stamp)

    def start(self) -> None:
        last_held = self._beacon.start()
        self._thread.start()
        self.consumer.start(last_held)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def problem(self) -> str | None:
        """Why the worker can no longer do its job (its flusher died, the broker refused it), or None."""
        if not self._thread.is_alive():
            return f"the worker's flusher stopped: {self._failed}"
        if not self.consumer.network_alive:
            return "the MQTT network thread stopped (see the traceback above)"
        return self.consumer.failure

    def stop(self, timeout: float | None = None) -> bool:
        """Commit and ack what is held, then disconnect. True when nothing was left unacked."""
        self.consumer.stop_accepting()
        with self._cond:
            self._stopping = True
            deadline = time.monotonic() + (timeout or self._settings.shutdown_timeout_s)
            self._cond.notify_all()
        self._retrier.stop_by(deadline)
        if self._thread.is_alive():
            # A hung insert must not hold the process past its deadline; what
            # it held stays unacknowledged and comes back.
            self._thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
        hung = self._thread.is_alive()
        if hung:
            log.error("the flusher did not finish by the shutdown deadline; its batch stays unacknowledged")
        self.consumer.stop()
        clean = self._clean and self._failed is None and not hung
        if clean:  # only then: an insert still hanging could commit after the retirement
            self._beacon.retire()
        return clean

    def _stamp(self) -> int:
        """A burst's receive time, taken under the lock, so the flusher knows what may still come:
        nothing received before a moment it reads here is missing from what it holds (ingest.mark)."""
        with self._cond:
            now_ms = self._clock.now_ms()
            if self._handing_ms is None:  # else an older burst still waits, partly handed over
                self._handing_ms = now_ms
            return now_ms

    def _deliver(self, deliveries: list[Delivery]) -> int:
        """Called on paho's network thread with messages in receive order; takes as many as the window and
        the held-bytes budget have room for and says how many. The consumer keeps the rest and reads no
        more until told of room (`consumer.room`): TCP backpressure to the broker, which keeps the rest
        queued, while paho's thread goes on pinging and reconnecting (it used to wait here, and with it
        the connection: eventpipe.mqtt.valve). Once stopping nothing more is taken: QoS 1 stays with the
        broker, and QoS 0 is gone, as QoS 0 means."""
        with self._cond:
            if self._stopping:
                return 0
            taken = deliveries[: max(0, self._capacity - self._held)]
            sizes = [held_size(item) for item in taken]
            size = sum(sizes)
            if self._held_bytes + size > self._max_held_bytes:  # large payloads: the bytes run out first
                rows, size = leading(sizes, len(taken), self._max_held_bytes - self._held_bytes)
                taken = taken[:rows]
            if len(taken) < len(deliveries):
                self._wanting = True
            else:
                self._handing_ms = None
            if not taken:
                return 0
            before, bytes_before = len(self._items), self._held_bytes
            self._items.extend(taken)
            self._held += len(taken)
            self._held_bytes += size
            # Counted under the lock, so a scrape never sees the books unbalanced.
            self._metrics.received.inc(len(taken))
            self._metrics.in_flight.inc(len(taken))
            self._metrics.in_flight_bytes.inc(size)
            # Wake the flusher when it may wait: for a first message (its timer) or a full batch (rows or bytes).
            policy = self._policy
            if (
                before == 0
                or before < policy.max_rows <= len(self._items)
                or bytes_before < policy.max_bytes <= self._held_bytes
            ):
                self._cond.notify_all()
            return len(taken)

    def _made_room(self) -> None:
        """Under the lock, after room was freed: the consumer offers what waits now, not at its next tick."""
        self._cond.notify_all()
        if self._wanting:
            self._wanting = False
            self.consumer.room()

    def _release_stale(self, generation: int) -> None:
        """Let go of queued QoS 1 copies from earlier connections: the resumed session resends
        them. QoS 0 is kept: the broker never sends it twice."""
        with self._cond:
            kept = [item for item in self._items if item.generation >= generation or item.qos == 0]
            released = len(self._items) - len(kept)
            if not released:
                return
            size = sum([held_size(item) for item in self._items]) - sum([held_size(item) for item in kept])
            self._items = kept
            self._held -= released
            self._held_bytes -= size
            self._metrics.in_flight.dec(released)
            self._metrics.in_flight_bytes.dec(size)
            self._metrics.released.inc(released)
            self._made_room()
        log.info("released %d messages of an earlier connection; the broker resends them", released)

    def _run(self) -> None:
        try:
            if (
                self._beacon.start_pending
            ):  # retried until stored: the feed must know this worker before its first batch
                self._retrier.run(lambda _isolate: self._beacon.store_start(), isolating=False)
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._commit(batch)
                else:  # idle: a mark alone, so complete_until moves on without traffic (ingest.mark)
                    self._beacon.store(self._marker.due(self._idle_before_ms, self.consumer.session_expiry_s))
        except Abandoned:
            with self._cond:
                left = len(self._items)
            self._clean = False
            log.error(
                "storage still failing at the shutdown deadline: the last batch and %d more messages stay "
                "unacknowledged in the broker and will be redelivered",
                left,
            )
        except BaseException as exc:
            self._failed = exc
            log.exception("the flusher stopped on an unexpected error; nothing after it was acknowledged")

    def _next_batch(self) -> list[Delivery] | None:
        with self._cond:
            while True:
                held = len(self._items)
                if self._stopping:
                    if held == 0:
                        return None
                    break
                age = time.monotonic() - self._items[0].arrived if held else 0.0
                # No batch is being written meanwhile (one flusher): the bytes held are the queue's.
                wait = self._policy.wait_s(held, self._held_bytes, age)
                if wait == 0.0:
                    break
                if not held and self._marker.idle():
                    # Nothing held and nothing being handed over: all received before now is committed.
                    self._idle_before_ms = self._handing_ms or self._clock.now_ms()
                    return []
                self._cond.wait(wait if wait is not None else self._marker.idle_wait_s())
            rows = self._policy.take(self._held_bytes, (held_size(item) for item in self._items))
            batch = self._items[:rows]
            del self._items[:rows]
            return batch

    def _commit(self, batch: list[Delivery]) -> None:
        started = time.monotonic()
        # Batches hold the oldest messages in receive order, so once this one is
        # committed, so is everything received before its first message (ingest.mark).
        marks = self._marker.due(batch[0].received_ms, self.consumer.session_expiry_s)
        committed = commit(batch, self._limits, self._writer, self._retrier)

        # Counted before the acks go out: an ack frees the broker to send more,
        # and those must not be seen on top of a batch already committed.
        metrics = self._metrics
        # Latency on the worker's clock, which stamped the receipts; freshness on the wall's, as producers' is.
        received = [delivery.received_ms for delivery in batch]
        self._metrics.observe_committed(committed.events, received, time.time_ns() // 1_000_000, self._clock.now_ms())
        metrics.stored.inc(len(committed.events) - committed.refused)
        for rejection in committed.rejections:
            metrics.dead_lettered.labels(reason=str(rejection.reason)).inc()
        size = sum([held_size(delivery) for delivery in batch])
        metrics.in_flight.dec(len(batch))
        metrics.in_flight_bytes.dec(size)
        acked = self.consumer.ack(batch)
        metrics.acked.inc(acked)
        unacked = sum(1 for delivery in batch if delivery.qos) - acked
        if unacked and self._stopping:
            # Committed, so nothing is lost: the broker redelivers them and the
            # copies collapse. But the stop did not ack all it held: say so.
            self._clean = False
            log.warning("%d committed messages could not be acknowledged (no live connection)", unacked)
        with self._cond:
            self._held -= len(batch)
            self._held_bytes -= size
            self._made_room()
        metrics.batch_rows.observe(len(batch))
        metrics.insert_seconds.observe(time.monotonic() - started)
        metrics.last_commit.set_to_current_time()
        # After the acks: the mark speaks for what came before this batch, so they need not wait for it.
        self._beacon.store(marks)
