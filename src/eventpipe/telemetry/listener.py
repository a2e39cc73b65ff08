"""The process's metrics listener and the registry it starts from: one of each per OS process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from eventpipe.errors import ConfigError
from eventpipe.port import unlistenable
from eventpipe.telemetry.exporter import Exporter


def process_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory, file descriptors and GC: one per OS process."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    api: CollectorRegistry | None = None,
    broker: CollectorRegistry | None = None,
    flag: str = "",
) -> Exporter:
    """The process's metrics listener (EVENTPIPE_METRICS_HOST, EVENTPIPE_METRICS_PORT), started; with `api`
    and `broker`, also the API's and the broker's registries, each on its own path (telemetry.exporter).
    `flag`: the command's own option for the port, named beside the variable in an error."""
    server = Exporter(registry, host, port, api=api, broker=broker)
    try:
        server.start()
    except OSError as exc:
        if (cause := unlistenable(host)) is not None:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {cause}; set EVENTPIPE_METRICS_HOST to a name or "
                "address of this host"
            ) from exc
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror}; pick another port "
            f"(EVENTPIPE_METRICS_PORT{f', or {flag}' if flag else ''})"
        ) from exc
    return server
