"""The worker's Prometheus metrics, on a registry that is passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventpipe.events import PROBE_EVENT_TYPE, Event, Reason
from eventpipe.ingest.histogram import BatchHistogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "eventpipe_messages_received_total", "MQTT messages handed to the worker.", registry=registry
        )
        self.redelivered = Counter(
            "eventpipe_messages_redelivered_total", "Messages the broker sent again (DUP flag).", registry=registry
        )
        self.expiring = Counter(
            "eventpipe_messages_expiring_total",
            "Messages received carrying an MQTT 5 Message Expiry Interval: the broker drops such a message, "
            "acknowledged, if it expires queued for the worker, and nothing counts that.",
            registry=registry,
        )
        self.released = Counter(
            "eventpipe_messages_released_total",
            "Held messages let go unacknowledged after a reconnect, because the broker resends them.",
            registry=registry,
        )
        self.dropped = Counter(
            "eventpipe_messages_dropped_total",
            "QoS 0 messages read while the worker was full and let go, oldest first, because those waiting passed "
            "EVENTPIPE_MAX_HELD_BYTES: a broker that keeps closing the connection during a store outage, each "
            "close read to its end. Never QoS 1, and never counted as received.",
            registry=registry,
        )
        self.acked = Counter(
            "eventpipe_messages_acked_total", "Messages acknowledged to the broker after commit.", registry=registry
        )
        self.stored = Counter("eventpipe_events_stored_total", "Event rows committed to ClickHouse.", registry=registry)
        self.dead_lettered = Counter(
            "eventpipe_dead_letters_total",
            "Messages committed to dead_letters, by reason.",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "eventpipe_messages_in_flight",
            "Messages received and not yet committed (the worker holds them; the broker awaits their ack).",
            registry=registry,
        )
        self.in_flight_bytes = Gauge(
            "eventpipe_messages_in_flight_bytes",
            "Payload and topic bytes of the messages in flight; at most EVENTPIPE_MAX_HELD_BYTES "
            "(eventpipe_max_held_bytes).",
            registry=registry,
        )
        self.waiting = Gauge(
            "eventpipe_messages_waiting",
            "Messages read that the worker had no room for, not yet taken (not counted as received until then): "
            "while any wait, the worker reads nothing more and the broker keeps the rest.",
            registry=registry,
        )
        self.waiting_bytes = Gauge(
            "eventpipe_messages_waiting_bytes",
            "Payload and topic bytes of the messages waiting; kept within EVENTPIPE_MAX_HELD_BYTES by letting "
            "the oldest QoS 0 go (eventpipe_messages_dropped_total).",
            registry=registry,
        )
        self.max_held_bytes = Gauge(
            "eventpipe_max_held_bytes",
            "EVENTPIPE_MAX_HELD_BYTES: held payloads reaching it stop the worker reading, as a full window does.",
            registry=registry,
        )
        self.batch_rows = Histogram(
            "eventpipe_batch_rows",
            "Messages per committed batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=registry,
        )
        self.insert_seconds = Histogram(
            "eventpipe_insert_duration_seconds",
            "Time to commit one batch, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.freshness = BatchHistogram(
            "eventpipe_event_freshness_seconds",
            "From the event's own timestamp to its commit in ClickHouse (includes producer clock skew).",
            (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
            registry,
        )
        self.ingest_latency = BatchHistogram(
            "eventpipe_ingest_latency_seconds",
            "From receipt by the worker to commit in ClickHouse.",
            (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry,
        )
        self.probes_sent = Counter(
            "eventpipe_probes_sent_total",
            "Probe events this worker published to watch its own path.",
            registry=registry,
        )
        self.probe_freshness = Gauge(
            "eventpipe_probe_freshness_seconds",
            "Publish-to-commit time of the last probe event: freshness even when traffic is idle.",
            registry=registry,
        )
        self.probe_last_commit = Gauge(
            "eventpipe_probe_last_commit_timestamp_seconds",
            "Unix time a probe event was last committed.",
            registry=registry,
        )
        self.storage_errors = Counter(
            "eventpipe_storage_errors_total",
            "Failed ClickHouse writes, by class: retry, unknown (retried, then isolated), halt.",
            ["class"],
            registry=registry,
        )
        self.halted = Gauge(
            "eventpipe_storage_halted", "1 while writes fail for a reason an operator must fix.", registry=registry
        )
        self.last_commit = Gauge(
            "eventpipe_last_commit_timestamp_seconds", "Unix time of the last committed batch.", registry=registry
        )
        self.clock_skew = Gauge(
            "eventpipe_clock_skew_seconds",
            "The worker's wall clock minus the ClickHouse server's, measured at most once a minute; "
            "positive when the worker is ahead.",
            registry=registry,
        )
        self.broker_window = Gauge(
            "eventpipe_mqtt_broker_receive_maximum",
            "In-flight window the broker advertised; should equal the worker's Receive Maximum.",
            registry=registry,
        )
        self.max_packet = Gauge(
            "eventpipe_mqtt_maximum_packet_size_bytes",
            "Maximum Packet Size the worker announces: the broker may not send it a larger packet.",
            registry=registry,
        )
        self.broker_max_packet = Gauge(
            "eventpipe_mqtt_broker_maximum_packet_size_bytes",
            "Maximum Packet Size the broker advertised (+Inf: none; 0 before the first connection). Above "
            "EVENTPIPE_MAX_PAYLOAD_BYTES + 4096, it can acknowledge messages it must then drop for the worker.",
            registry=registry,
        )
        self.connected = Gauge("eventpipe_mqtt_connected", "1 while connected to the broker.", registry=registry)
        self.reconnects = Counter(
            "eventpipe_mqtt_reconnects_total", "Connections to the broker after the first.", registry=registry
        )
        self.session_takeovers = Counter(
            "eventpipe_mqtt_session_takeovers_total",
            "Times another client connected with this worker's session id and the broker handed it the session "
            "(MQTT v5 DISCONNECT 0x8E, sent by Mosquitto 2.0.15 and later).",
            registry=registry,
        )
        self.sessions_lost = Counter(
            "eventpipe_mqtt_sessions_lost_total",
            "Connects on which the broker had no session for this worker that it should have held (a reconnect, or"
            " a start within the session's expiry of the worker's last connection): what it queued for it is gone.",
            registry=registry,
        )
        # A time, not only the count: a loss found at a start is the new process's first sample, which
        # increase() cannot see.
        self.session_lost_at = Gauge(
            "eventpipe_mqtt_session_lost_timestamp_seconds",
            "When this process last counted a session lost (eventpipe_mqtt_sessions_lost_total); 0: never.",
            registry=registry,
        )
        for reason in Reason:
            self.dead_lettered.labels(reason=str(reason))
        for name in ("retry", "unknown", "halt"):
            self.storage_errors.labels(**{"class": name})

    def observe_committed(self, events: list[Event], received_ms: list[int], now_ms: int, clock_ms: int) -> None:
        """A committed batch's delays: each event's since its timestamp by the wall clock `now_ms`, each
        message's since its receipt by the worker's clock `clock_ms` (ingest.clock), which stamped it."""
        # An event stamped ahead (clock skew) is fresh: observe_many counts what is below 0 as 0.
        self.freshness.observe_many([(now_ms - event.timestamp_ms) / 1000 for event in events])
        self.ingest_latency.observe_many([(clock_ms - received) / 1000 for received in received_ms])
        probes = [event.timestamp_ms for event in events if event.event_type == PROBE_EVENT_TYPE]
        if probes:
            # Clamped like freshness: a clock ahead of this one must not read as a negative delay.
            self.probe_freshness.set(max(0, now_ms - max(probes)) / 1000)
            self.probe_last_commit.set(now_ms / 1000)
