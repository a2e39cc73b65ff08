"""Composition root of `eventpipe broker-metrics`: compose's `mosquitto-exporter`.

The broker's $SYS statistics under the names sapcc/mosquitto-exporter gave them, and the lines of its log
topics about packets refused or dropped for their size (stack.statistics), served on the metrics listener.
It replaced that exporter, which its upstream builds for amd64 only (arm64 hosts needed emulation), and
which had no way to count those lines: the EventpipeOversizePackets alert could not fire in compose.
"""

from __future__ import annotations

import argparse
import logging

from eventpipe.cli.runtime import Shutdown, process_registry, serve_metrics, setup_logging
from eventpipe.config import Settings
from eventpipe.host import address
from eventpipe.redaction import redact
from eventpipe.stack.statistics import Statistics

log = logging.getLogger("eventpipe")
# How long the start waits for the first subscription before it says it is still trying.
FIRST_WAIT_S = 10.0


def run_broker_metrics(_args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    registry = process_registry()
    # Unseeded: compose's broker retains its $SYS values, so each counter comes with its true value at
    # once, and one seeded with 0 would jump from 0 to the broker's total, a false increase for the alerts.
    statistics = Statistics(settings.mqtt_url, settings.mqtt_ca_file, seeded=False, log_lines=True)
    registry.register(statistics)
    metrics_server = serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    shutdown = Shutdown("stopping")
    shutdown.install()
    if not statistics.start(wait_s=FIRST_WAIT_S):
        log.warning(
            "not subscribed to %s's $SYS statistics after %.0f s; still trying (its scrapes answer 503 meanwhile)",
            redact(settings.mqtt_url),
            FIRST_WAIT_S,
        )
    log.info(
        "serving the statistics of %s on http://%s/metrics",
        redact(settings.mqtt_url),
        address(settings.metrics_host, metrics_server.port),
    )
    # Stopped for good (an error it cannot retry past, logged): exit, so that the container is restarted
    # rather than left answering 503.
    problem = shutdown.wait(lambda: None if statistics.alive else "the statistics reader stopped")
    statistics.stop()
    metrics_server.shutdown()
    if problem is not None:
        log.error("stopped: %s", problem)
    return 0 if problem is None else 1
