"""Composition root of `eventpipe broker-metrics`: compose's `mosquitto-exporter`.

The broker's $SYS statistics under the names sapcc/mosquitto-exporter gave them (stack.statistics), and,
given the broker's log file (EVENTPIPE_BROKER_LOG_FILE), its lines about packets refused or dropped for
their size (stack.journal), served on the metrics listener. It replaced that exporter, which its upstream
builds for amd64 only (arm64 hosts needed emulation), and which had no way to count those lines: the
EventpipeOversizePackets alert could not fire in compose.

The log is read from a file the broker shares with it, not from the broker's log topics (`log_dest
topic`): those made each connection three messages queued in the broker for this reader, which a storm of
connections could pile up in the broker's memory and then have dropped, counted as the broker's drops
(a page, and the completeness SLO spent, with no event lost).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from eventpipe.cli.console import setup_logging
from eventpipe.cli.shutdown import Shutdown
from eventpipe.config import Settings
from eventpipe.errors import ConfigError
from eventpipe.port import address
from eventpipe.redaction import redact
from eventpipe.stack.journal import Aside, Journal
from eventpipe.stack.statistics import Statistics
from eventpipe.telemetry.listener import process_registry, serve_metrics

log = logging.getLogger("eventpipe")
# How long the start waits for the first subscription before it says it is still trying.
FIRST_WAIT_S = 10.0


def run_broker_metrics(_args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    registry = process_registry()
    # Unseeded: compose's broker retains its $SYS values, so each counter comes with its true value at
    # once, and one seeded with 0 would jump from 0 to the broker's total, a false increase for the alerts.
    statistics = Statistics(settings.mqtt_url, settings.mqtt_ca_file, seeded=False)
    registry.register(statistics)
    keep_short = _journal(settings.broker_log_file, registry)
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

    def still_fine() -> str | None:
        keep_short()
        # Stopped for good (an error it cannot retry past, logged): exit, so that the container is restarted
        # rather than left answering 503.
        return None if statistics.alive else "the statistics reader stopped"

    problem = shutdown.wait(still_fine)
    statistics.stop()
    metrics_server.shutdown()
    if problem is not None:
        log.error("stopped: %s", problem)
    return 0 if problem is None else 1


def _journal(path: Path | None, registry: CollectorRegistry) -> Callable[[], object]:
    """Counts the oversize lines of `path` from now on (in `registry`); returns what keeps it short, to be
    called every half second. Without a log file: nothing counted, nothing to do."""
    if path is None:
        return lambda: None
    try:
        with path.open("r+b") as handle:
            start = handle.seek(0, 2)  # its lines from now on: those before were counted by its last run, or by none
    except FileNotFoundError:
        start = 0  # the broker has not written it yet: all it will write is new
        log.warning("the broker's log %s is not there yet (EVENTPIPE_BROKER_LOG_FILE); counted once it is", path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read and write the broker's log {path} (EVENTPIPE_BROKER_LOG_FILE): {exc.strerror}; run "
            "`eventpipe broker-metrics` as the broker's user, or leave the variable empty to count no oversize "
            "packets"
        ) from None
    journal = Journal(path, start)
    registry.register(journal)
    aside = Aside(path)
    return lambda: aside(journal.catch_up)
