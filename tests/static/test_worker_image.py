"""The scripts inside the app images: the worker's entrypoint (per-replica MQTT session names) and the
healthchecks `docker compose up --wait` relies on."""

from __future__ import annotations

import importlib.util
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from eventpipe.host import free_port
from eventpipe.ingest.metrics import IngestMetrics
from tests.support import compose


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load(compose.REPO / "ingest-worker" / "entrypoint.py")


class FakeDockerDns(threading.Thread):
    """Answers every PTR query the way Docker's embedded DNS does for a compose container
    (name compressed against the question), or with NXDOMAIN when `name` is None."""

    def __init__(self, name: str | None) -> None:
        super().__init__(daemon=True)
        self.ptr_name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()

    def run(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            ident = query[:2]
            question = query[12:]
            if self.ptr_name is None:
                header = ident + struct.pack("!5H", 0x8183, 1, 0, 0, 0)
                self.sock.sendto(header + question, client)
                continue
            rdata = entrypoint.encode_name(self.ptr_name)
            answer = struct.pack("!HHHIH", 0xC00C, 12, 1, 600, len(rdata)) + rdata
            header = ident + struct.pack("!5H", 0x8180, 1, 1, 0, 0)
            self.sock.sendto(header + question + answer, client)

    def __enter__(self) -> FakeDockerDns:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def test_a_replica_is_named_after_its_compose_container() -> None:
    with FakeDockerDns("eventpipe-ingest-worker-2.eventpipe_default") as dns:
        assert entrypoint.replica_client_id(dns.address) == "eventpipe-ingest-worker-2"


def test_without_a_name_from_docker_the_worker_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # A made-up id would strand the old session's share of the stream at every re-creation.
    started: list[list[str]] = []
    monkeypatch.setattr(entrypoint.os, "execvp", lambda _file, args: started.append(args))
    monkeypatch.delenv("EVENTPIPE_MQTT_CLIENT_ID", raising=False)
    with FakeDockerDns(None) as dns:
        monkeypatch.setattr(entrypoint, "DOCKER_DNS", dns.address)
        assert entrypoint.main(["worker"]) == 2
    assert started == []


def test_the_worker_starts_with_the_replica_name_or_the_id_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(entrypoint.os, "execvp", lambda _file, args: started.append(args))
    monkeypatch.delenv("EVENTPIPE_MQTT_CLIENT_ID", raising=False)
    with FakeDockerDns("eventpipe-ingest-worker-3.eventpipe_default") as dns:
        monkeypatch.setattr(entrypoint, "DOCKER_DNS", dns.address)
        entrypoint.main([])
        assert entrypoint.os.environ["EVENTPIPE_MQTT_CLIENT_ID"] == "eventpipe-ingest-worker-3"
        monkeypatch.setenv("EVENTPIPE_MQTT_CLIENT_ID", "chosen")
        entrypoint.main(["worker"])
        assert entrypoint.os.environ["EVENTPIPE_MQTT_CLIENT_ID"] == "chosen"
    assert started == [["eventpipe", "worker"], ["eventpipe", "worker"]]


def test_migrate_refuses_a_database_name_it_would_have_to_quote(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(entrypoint.os, "execvp", lambda _file, args: started.append(args))
    monkeypatch.setenv("EVENTPIPE_CLICKHOUSE_DSN", "http://u:p@127.0.0.1:1/bad`name")
    assert entrypoint.main(["migrate"]) == 2
    assert started == []


def run_healthcheck(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=30, check=False)


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
    script = compose.REPO / "ingest-worker" / "healthcheck.py"
    env = {"EVENTPIPE_METRICS_PORT": str(port)}
    metrics.connected.set(0)
    assert run_healthcheck(script, env).returncode == 1
    metrics.connected.set(1)
    assert run_healthcheck(script, env).returncode == 0
    assert run_healthcheck(script, {"EVENTPIPE_METRICS_PORT": str(free_port())}).returncode == 1


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
    script = compose.REPO / "api" / "healthcheck.py"
    env = {"EVENTPIPE_API_PORT": str(server.server_address[1])}
    try:
        assert run_healthcheck(script, env).returncode == 0
        Readyz.status = 503
        assert run_healthcheck(script, env).returncode == 1
    finally:
        Readyz.status = 200
        server.shutdown()
