"""An in-process worker assembled as `eventpipe worker` assembles it (ingest.assembly), for integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest.assembly import assemble
from eventpipe.ingest.consumer import Consumer
from eventpipe.ingest.worker import Worker
from eventpipe.store.client import connect
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer
from tests.support.services import RECEIVE_MAXIMUM


@dataclass
class Running:
    worker: Worker
    registry: CollectorRegistry
    reader: Reader

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def dead_letters(self) -> float:
        return sum(
            sample.value
            for family in self.registry.collect()
            if family.name == "eventpipe_dead_letters"
            for sample in family.samples
            if sample.name.endswith("_total")
        )

    def unreconciled(self) -> float:
        """received - (stored + dead-lettered + in flight + released): anything but 0 would be a loss."""
        return self.metric("eventpipe_messages_received_total") - (
            self.metric("eventpipe_events_stored_total")
            + self.dead_letters()
            + self.metric("eventpipe_messages_in_flight")
            + self.metric("eventpipe_messages_released_total")
        )


def settings_for(mqtt_url: str, dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mqtt_url": mqtt_url,
        "clickhouse_dsn": dsn,
        "mqtt_client_id": f"test-worker-{uuid.uuid4().hex[:8]}",
        "batch_max_rows": 500,
        "batch_max_ms": 50,
        "mqtt_receive_maximum": RECEIVE_MAXIMUM,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.5,
        "shutdown_timeout_s": 10,
        # Probes only where a test asks for them: they are messages and events of their own.
        "probe_interval_s": 0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_worker(
    settings: Settings, consumer_factory: Callable[..., Consumer] = Consumer, writer: Writer | None = None
) -> Iterator[Running]:
    registry = CollectorRegistry()
    ingest = assemble(settings, registry, writer=writer, consumer_factory=consumer_factory)
    ingest.start()
    assert ingest.worker.consumer.wait_connected(10), "worker did not connect to the broker"
    try:
        yield Running(ingest.worker, registry, Reader(connect(settings.resolved_clickhouse_dsn)))
    finally:
        ingest.prober.stop()
        if ingest.worker.alive:
            ingest.worker.stop()
