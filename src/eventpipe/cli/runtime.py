"""What every long-running command shares: logging, signals, the metrics endpoint."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from eventpipe.errors import ConfigError

log = logging.getLogger("eventpipe")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # paho and uvicorn are chatty at INFO about things eventpipe already reports.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


class Shutdown:
    """Turns SIGTERM/SIGINT into an event; a second signal forces the exit."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            # Safe to cut short: whatever was not acknowledged stays with the broker.
            log.error(
                "second %s: exiting now; unacknowledged messages will be redelivered", signal.Signals(signum).name
            )
            os._exit(1)
        log.info("%s received: flushing, acknowledging and stopping", signal.Signals(signum).name)
        self.requested.set()

    def wait(self, still_fine: Callable[[], str | None], interval: float = 0.5) -> str | None:
        """Block until a signal (returns None) or until `still_fine` reports a problem (returns it)."""
        while not self.requested.wait(interval):
            problem = still_fine()
            if problem:
                return problem
        return None


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror}; pick another --metrics-port"
        ) from exc
    return server
