"""The worker and its prober, built from settings in one place.

`eventpipe worker`, `eventpipe up`, the benchmark's worker and the tests'
pipeline all take theirs from `assemble`, so what is measured and tested is
what runs. What differs between them is passed in: where the metrics go, and,
for tests, a writer or consumer with a fault injected, or paho's own receive
path. Probes follow `probe_interval_s` (0: none, as the benchmark sets it).
The schema is not the worker's: whoever owns the store migrates it first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest.consumer import Consumer
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.probe import Prober
from eventpipe.ingest.worker import Worker
from eventpipe.store.client import connect
from eventpipe.store.writer import Writer


class Assembly(NamedTuple):
    worker: Worker
    prober: Prober

    def start(self) -> None:
        self.worker.start()
        self.prober.start()

    def stop(self) -> bool:
        """Probes end first, then the worker commits and acknowledges what it holds; True when it left nothing."""
        self.prober.stop()
        return self.worker.stop()


def assemble(
    settings: Settings,
    registry: CollectorRegistry,
    *,
    writer: Writer | None = None,
    consumer_factory: Callable[..., Consumer] = Consumer,
) -> Assembly:
    """A worker writing to `settings`' ClickHouse (or through `writer`) and its prober, both counted in `registry`.
    Raises DependencyError when paho lacks what the receive path builds on (eventpipe.mqtt.receiver)."""
    metrics = IngestMetrics(registry)
    writer = writer or Writer(connect(settings.resolved_clickhouse_dsn))
    return Assembly(Worker(settings, writer, metrics, consumer_factory), Prober(settings, metrics))
