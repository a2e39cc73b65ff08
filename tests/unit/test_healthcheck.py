"""`eventpipe healthcheck worker|api|broker-metrics`, the images' HEALTHCHECK that `docker compose up --wait` relies on,
run as Docker runs it: the command, its exit status, against real endpoints on this host."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.port import free_port
from eventpipe.stack.statistics import Statistics
from eventpipe.telemetry.exporter import Exporter
from tests.support.stack import run_eventpipe


def healthcheck(service: str, env: dict[str, str]) -> int:
    outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    return run_eventpipe("healthcheck", service, env={**outside, **env}, timeout=30).returncode


@pytest.fixture
def worker_metrics() -> Iterator[tuple[int, IngestMetrics]]:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, metrics
    server.shutdown()
    thread.join(5)


def test_the_worker_is_healthy_only_while_connected_to_the_broker(worker_metrics: tuple[int, IngestMetrics]) -> None:
    port, metrics = worker_metrics
    # As in the image: the worker listens on every interface, the check asks on loopback.
    env = {"EVENTPIPE_METRICS_HOST": "0.0.0.0", "EVENTPIPE_METRICS_PORT": str(port)}
    metrics.connected.set(0)
    assert healthcheck("worker", env) == 1
    metrics.connected.set(1)
    assert healthcheck("worker", env) == 0
    assert healthcheck("worker", {"EVENTPIPE_METRICS_PORT": str(free_port())}) == 1


class Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_the_api_is_healthy_only_while_ready() -> None:
    server = HTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"EVENTPIPE_API_HOST": "0.0.0.0", "EVENTPIPE_API_PORT": str(server.server_address[1])}
    try:
        assert healthcheck("api", env) == 0
        Readyz.status = 503
        assert healthcheck("api", env) == 1
    finally:
        Readyz.status = 200
        server.shutdown()
    assert healthcheck("api", env) == 1, "an API that does not answer is not healthy"


@pytest.mark.parametrize(("service", "variable"), [("api", "EVENTPIPE_API_HOST"), ("worker", "EVENTPIPE_METRICS_HOST")])
@pytest.mark.parametrize("host", ["bad host", "a:b", "[x"])
def test_a_host_no_url_can_hold_is_unhealthy_naming_its_variable(service: str, variable: str, host: str) -> None:
    outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    done = run_eventpipe("healthcheck", service, env={**outside, variable: host}, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr  # Docker reserves 2
    assert done.stdout.startswith("unhealthy: ") and f"{variable} {host!r} is no host name" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr


def test_the_broker_exporter_is_healthy_only_while_subscribed() -> None:
    # Its metrics listener, as `eventpipe broker-metrics` serves it: 503 until the reader is subscribed.
    statistics = Statistics("mqtt://exporter:secret@127.0.0.1:1", seeded=False)  # never started
    registry = CollectorRegistry()
    registry.register(statistics)
    server = Exporter(registry, "0.0.0.0", 0)
    server.start()
    env = {"EVENTPIPE_METRICS_HOST": "0.0.0.0", "EVENTPIPE_METRICS_PORT": str(server.port)}
    try:
        assert healthcheck("broker-metrics", env) == 1
        statistics._subscribed.set()
        assert healthcheck("broker-metrics", env) == 0
    finally:
        server.shutdown()
    assert healthcheck("broker-metrics", env) == 1


@pytest.mark.parametrize(
    ("service", "variables"),
    [
        ("worker", ["EVENTPIPE_METRICS_HOST", "EVENTPIPE_METRICS_PORT"]),
        ("broker-metrics", ["EVENTPIPE_METRICS_HOST", "EVENTPIPE_METRICS_PORT"]),
        ("api", ["EVENTPIPE_API_HOST", "EVENTPIPE_API_PORT", "EVENTPIPE_API_TLS_CERT_FILE"]),
    ],
)
def test_a_check_nothing_answers_names_the_variables_that_make_its_address(service: str, variables: list[str]) -> None:
    # Run by hand beside `eventpipe up --metrics-port N` it asked 9464 and said only "Connection refused".
    port = str(free_port())
    outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    env = {**outside, "EVENTPIPE_METRICS_PORT": port, "EVENTPIPE_API_PORT": port}
    done = run_eventpipe("healthcheck", service, env=env, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("unhealthy: ") and "does not answer" in done.stdout, done.stdout
    for variable in variables:
        assert variable in done.stdout, done.stdout


@pytest.mark.parametrize("service", ["worker", "broker-metrics", "api"])
def test_a_service_that_takes_the_check_and_never_answers_is_not_said_to_be_elsewhere(service: str) -> None:
    # A busy worker timed the check out, and the line told the operator to fix the variables that had found it.
    with socket.create_server(("127.0.0.1", 0)) as stuck:  # the kernel takes the connection; no one answers
        port = str(stuck.getsockname()[1])
        outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
        env = {**outside, "EVENTPIPE_METRICS_PORT": port, "EVENTPIPE_API_PORT": port}
        done = run_eventpipe("healthcheck", service, env=env, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("unhealthy: ") and "timed out" in done.stdout, done.stdout
    assert "name it" not in done.stdout, done.stdout
