"""The live stream into the read benchmark's direct process, through the worker `eventpipe up` runs.

The API side is timed while `eventpipe up` takes a stream over MQTT: its
broker delivers it, its worker parses and batches it in the API's own process
and inserts it on the timer. The direct side takes the same stream from a
broker of the bench's own into the very same worker (ingest.assembly) in the
process that times the Reader's calls, so both read past the same fresh small
parts and share the CPU with the same ingest, broker and publisher: what is
left between them is HTTP and the API's own work. A thread writing through the
Writer would leave out the broker, the MQTT receive and the parsing: a lighter
load than the API side's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest.assembly import Assembly, assemble


class Inflow:
    """The worker on `url`'s broker, inserting into `dsn`, for as long as the `with` block lasts."""

    def __init__(self, url: str, dsn: str, receive_maximum: int) -> None:
        settings = Settings(
            mqtt_url=url,
            clickhouse_dsn=dsn,
            # Each run has a broker of its own (bench.endpoint), so no earlier session is resumed.
            mqtt_client_id="bench-direct",
            mqtt_receive_maximum=receive_maximum,
            # No probes: the stream is the bench's, and only it.
            probe_interval_s=0,
            mqtt_session_secret=None,
        )
        self._registry = CollectorRegistry()
        self._ingest: Assembly = assemble(settings, self._registry)

    @property
    def stored(self) -> int:
        return int(self._registry.get_sample_value("eventpipe_events_stored_total") or 0)

    def problem(self) -> str | None:
        """Why the worker cannot take the stream (no connection, a failed flusher), or None."""
        return self._ingest.worker.problem()

    def __enter__(self) -> Inflow:
        self._ingest.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._ingest.stop()
