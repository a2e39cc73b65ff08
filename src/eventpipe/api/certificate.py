"""When the certificate the API serves ends, as a gauge.

Prometheus scrapes the API's metrics listener, not its HTTPS port, so no scrape
fails once that certificate has ended, while every client of the API refuses
it. The gauge lets EventpipeAPICertificateExpiring say so two weeks ahead.
uvicorn reads the certificate once, at start, so this is read then too: a file
renewed since is served, and shown, after a restart.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

NAME = "eventpipe_api_tls_certificate_expiry_timestamp_seconds"
HELP = "When the certificate the API serves (EVENTPIPE_API_TLS_CERT_FILE, read at its start) ends, in epoch seconds."


def expiry_s(cert_file: Path) -> float | None:
    """notAfter of the first certificate in `cert_file` (the server's own, before its chain), in epoch
    seconds; None when it cannot be read (the start has already checked that the pair loads)."""
    # CPython's own reader, the one the ssl module's tests use: the standard library has no public one.
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        return None
    try:
        return float(ssl.cert_time_to_seconds(decode(str(cert_file))["notAfter"]))
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return None


class Certificate(Collector):
    """No sample without a certificate (plain HTTP) or one that could not be read: never a made-up end."""

    def __init__(self, cert_file: Path | None) -> None:
        self._ends = expiry_s(cert_file) if cert_file is not None else None
        if cert_file is not None and self._ends is None:
            # Else silent: no sample, and the alert that the certificate ends could never fire.
            log.warning(
                "cannot read when the certificate in %s ends (EVENTPIPE_API_TLS_CERT_FILE): "
                "EventpipeAPICertificateExpiring cannot warn of it; watch its end another way",
                cert_file,
            )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP)
        if self._ends is not None:
            family.add_metric([], self._ends)
        yield family
