"""Servers on every interface are reached where port.address says: Prometheus scrapes there, healthchecks ask there."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.api.server import ApiServer
from eventpipe.port import address, free_port
from eventpipe.telemetry.exporter import Exporter
from tests.support.api import KEY, readonly_reader


def _ipv6() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6(), reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("host", ["::", "0.0.0.0", "::1"])
def test_the_api_and_the_worker_metrics_are_reached_on_every_interface_where_address_says(
    clickhouse_dsn: str, host: str
) -> None:
    # `::` takes IPv6 only (IPV6_V6ONLY): asked on 127.0.0.1, both refused, and `up`'s Prometheus paged
    # EventpipeAPIDown and EventpipeWorkerDown for a working stack (found by an attack).
    api = ApiServer(create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), [KEY]), host, free_port())
    api.start()
    try:
        with urllib.request.urlopen(f"http://{address(host, api.port)}/healthz", timeout=5) as answer:
            assert answer.status == 200
        assert api.url == f"http://{address(host, api.port)}"
    finally:
        api.stop()
    exporter = Exporter(CollectorRegistry(), host, 0)
    exporter.start()
    try:
        with urllib.request.urlopen(f"http://{address(host, exporter.port)}/metrics", timeout=5) as answer:
            assert answer.status == 200
    finally:
        exporter.shutdown()
