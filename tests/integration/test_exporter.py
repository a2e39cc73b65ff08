"""The metrics endpoint against clients that connect and say nothing: bounded threads and sockets, still answering."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventpipe.telemetry.exporter import API_PATH, BROKER_PATH, Exporter, Unavailable
from tests.support.files import log_out_of_files
from tests.support.wait import wait_until

IDLERS = 500


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("eventpipe_test_things", "Things counted by the test.", registry=registry).inc(3)
    return registry


@pytest.fixture
def serve(registry: CollectorRegistry) -> Iterator[Callable[[float], Exporter]]:
    started: list[Exporter] = []

    def start(read_timeout_s: float) -> Exporter:
        server = Exporter(registry, "127.0.0.1", 0, max_connections=16, read_timeout_s=read_timeout_s)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()


@pytest.fixture
def exporter(serve: Callable[[float], Exporter]) -> Exporter:
    return serve(1.0)


def threads() -> set[int]:
    """The Python threads of this process: a server that gave each connection a thread would add
    them here. Not every OS thread: the embedded ClickHouse of other tests in this process starts
    and ends its own at will (a count of those once moved by one with no connection made). A set,
    not a count: threads that earlier tests left idle end on their own meanwhile (the API's read
    threads after a minute), and a count then fell by one with no connection made."""
    return {thread.ident for thread in threading.enumerate() if thread.ident is not None}


def sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def scrape(port: int, path: str = "/metrics", **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - a fixed http URL
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def closed(sock: socket.socket) -> bool:
    sock.settimeout(0)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_connections_take_no_threads_and_metrics_still_answer(serve: Callable[[float], Exporter]) -> None:
    # Idlers are never timed out during the test: the scrape must get through while they all wait.
    exporter = serve(60.0)
    scrape(exporter.port)
    before_threads, before_sockets = threads(), sockets()
    idlers = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(IDLERS)]
    try:
        started = time.monotonic()
        status, _headers, body = scrape(exporter.port)
        assert status == 200 and b"eventpipe_test_things_total 3.0" in body
        assert time.monotonic() - started < 5.0, "a scrape waited behind the idle connections"
        assert not threads() - before_threads, "idle connections made threads"
        # The server holds at most its 16 slots; the rest of the idlers it has closed.
        wait_until(lambda: sum(not closed(sock) for sock in idlers) <= 16, what="connections past the limit closed")
        assert sockets() - before_sockets <= IDLERS + 16
    finally:
        for sock in idlers:
            sock.close()


def test_a_silent_connection_is_closed_after_the_read_timeout(exporter: Exporter) -> None:
    with (
        socket.create_connection(("127.0.0.1", exporter.port)) as silent,
        socket.create_connection(("127.0.0.1", exporter.port)) as slow,
    ):
        started = time.monotonic()
        # One byte at a time would keep a per-read timeout waiting forever; the deadline is for the whole request.
        # 3 s: the read timeout is 1 s, and a loaded machine (another test process) runs the server late.
        while time.monotonic() - started < 3.0 and not closed(slow):
            try:
                slow.send(b"G")
            except OSError:
                break  # reset by the server: closed
            time.sleep(0.2)
        waited = time.monotonic() - started
        assert closed(silent) and closed(slow)
    assert 0.9 < waited < 3.0, f"closed after {waited:.1f}s, the read timeout is 1s"


def test_oversized_requests_are_dropped(exporter: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", exporter.port)) as sock:
        with contextlib.suppress(OSError):  # the server may reset it before all is sent
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 64 * 1024)
        wait_until(lambda: closed(sock), what="the oversized request dropped")
    assert scrape(exporter.port)[0] == 200


def test_it_speaks_what_prometheus_and_the_healthcheck_ask(exporter: Exporter) -> None:
    status, headers, body = scrape(exporter.port, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"eventpipe_test_things_total 3.0" in gzip.decompress(body)
    status, headers, body = scrape(exporter.port, Accept="application/openmetrics-text; version=1.0.0")
    assert headers["Content-Type"].startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    status, _headers, body = scrape(exporter.port, "/metrics?name[]=eventpipe_test_things_total")
    assert status == 200 and b"eventpipe_test_things_total" in body
    assert scrape(exporter.port, "/elsewhere")[0] == 404
    head = urllib.request.Request(f"http://127.0.0.1:{exporter.port}/metrics", method="HEAD")
    with urllib.request.urlopen(head, timeout=2) as response:  # noqa: S310 - a fixed http URL
        assert response.status == 200 and response.read() == b""


def test_a_taken_port_fails_at_start(exporter: Exporter, registry: CollectorRegistry) -> None:
    with pytest.raises(OSError):
        Exporter(registry, "127.0.0.1", exporter.port).start()


def test_the_apis_registry_is_served_on_its_own_path_and_only_there(registry: CollectorRegistry) -> None:
    # `eventpipe up` serves the worker and the API from one process: Prometheus scrapes the API's series as
    # job "api" on API_PATH, and each job must see its own series alone (the rules count them per job).
    api = CollectorRegistry()
    Counter("eventpipe_test_requests", "Requests counted by the test.", registry=api).inc(5)
    server = Exporter(registry, "127.0.0.1", 0, api=api)
    server.start()
    try:
        status, _headers, body = scrape(server.port, API_PATH)
        assert status == 200 and b"eventpipe_test_requests_total 5.0" in body
        assert b"eventpipe_test_things" not in body
        status, _headers, body = scrape(server.port)
        assert status == 200 and b"eventpipe_test_things_total 3.0" in body
        assert b"eventpipe_test_requests" not in body
    finally:
        server.shutdown()


def test_without_an_api_registry_its_path_is_not_found(exporter: Exporter) -> None:
    # `eventpipe worker` and `eventpipe api` each serve one registry: a scrape of the path is a 404,
    # so a Prometheus pointed at the wrong one says so instead of reading an empty job.
    assert scrape(exporter.port, API_PATH)[0] == 404


class Unknowing(Collector):
    def collect(self) -> Iterator[Metric]:
        raise Unavailable("not subscribed")


def test_a_registry_that_cannot_tell_its_values_fails_its_scrape_alone(registry: CollectorRegistry) -> None:
    # `eventpipe up`'s reader of the broker's statistics, cut off from it: its values may have changed
    # unheard, so the scrape fails (Prometheus marks job "mosquitto" down) and the other jobs are served.
    broker = CollectorRegistry()
    broker.register(Unknowing())
    server = Exporter(registry, "127.0.0.1", 0, broker=broker)
    server.start()
    try:
        status, _headers, _body = scrape(server.port, BROKER_PATH)
        assert status == 503
        assert scrape(server.port)[0] == 200
    finally:
        server.shutdown()


def test_a_process_out_of_files_logs_one_line_a_minute_not_a_traceback_per_accept() -> None:
    # The API's loop counted these already; the metrics port's logged each with a traceback: under
    # `ulimit -n 256`, 182,244 of them, 100 MB of log in 4 minutes (an attack on `eventpipe up`).
    err = log_out_of_files(
        "from prometheus_client import CollectorRegistry\nfrom eventpipe.telemetry.exporter import Exporter\n"
        'Exporter(CollectorRegistry(), "127.0.0.1", port).start()'
    )
    assert err.count("out of system resource") == 0, err[:2000]
    assert err.count("could not accept connections") == 1, err[:2000]
