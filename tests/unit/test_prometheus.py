"""The Prometheus config `eventpipe up` writes: read back as written, whatever its paths hold."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import yaml

from eventpipe.port import address, free_port
from eventpipe.stack.child import find_binary
from eventpipe.stack.prometheus import Prometheus, render_config
from eventpipe.telemetry.exporter import API_PATH, BROKER_PATH


def test_paths_with_yaml_marks_are_read_back_whole() -> None:
    # A data dir is the user's to name; unquoted, " #" began a comment and ": " a mapping.
    rules = Path("/srv/event pipe #2/rules: new")
    config = yaml.safe_load(render_config(9090, "127.0.0.1:9464", rules))
    assert config["rule_files"] == [f"{rules}/*.yml"]


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("", "127.0.0.1:9464"),
        ("0.0.0.0", "127.0.0.1:9464"),
        ("::", "[::1]:9464"),
        ("192.0.2.2", "192.0.2.2:9464"),
        ("::1", "[::1]:9464"),
        ("localhost", "localhost:9464"),
    ],
)
def test_prometheus_scrapes_the_api_and_the_worker_where_the_metrics_host_makes_them_listen(
    host: str, target: str
) -> None:
    # Targets were 127.0.0.1 whatever EVENTPIPE_METRICS_HOST said: with a specific address, nothing was
    # scraped, EventpipeWorkerDown and EventpipeAPIDown paged for a working stack, and no other alert could
    # fire (found by a cross-check of the config as code).
    config = yaml.safe_load(render_config(9090, address(host, 9464), Path("/rules")))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ingest-worker"]["static_configs"][0]["targets"] == [target]
    assert jobs["ingest-worker"].get("metrics_path", "/metrics") == "/metrics"
    # The API's series on the same listener, on a path of its own: never on the API's port, which keys reach.
    assert jobs["api"]["static_configs"][0]["targets"] == [target]
    assert jobs["api"]["metrics_path"] == API_PATH
    assert "scheme" not in jobs["api"]


def test_the_broker_statistics_are_scraped_as_compose_scrapes_its_exporter_when_up_runs_the_broker() -> None:
    # The broker alerts read job "mosquitto" in compose; natively nothing served them and they never fired.
    config = yaml.safe_load(render_config(9090, "127.0.0.1:9464", Path("/rules"), broker=True))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mosquitto"]["metrics_path"] == BROKER_PATH
    assert jobs["mosquitto"]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    # With --mqtt-url, `up` runs no broker and reads no statistics: no target that could only be down.
    config = yaml.safe_load(render_config(9090, "127.0.0.1:9464", Path("/rules")))
    assert "mosquitto" not in {job["job_name"] for job in config["scrape_configs"]}


@pytest.mark.skipif(find_binary("prometheus") is None, reason="needs prometheus on PATH (apt-get install prometheus)")
def test_a_taken_port_is_reported_naming_the_flag_and_the_variable(tmp_path: Path) -> None:
    # The port may come from EVENTPIPE_PROMETHEUS_PORT: the warning named --prometheus-port alone.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        why = Prometheus(port, tmp_path, "127.0.0.1:1", tmp_path / "rules").start()
    assert why is not None and f"port {port} is already in use" in why
    assert "--prometheus-port" in why and "EVENTPIPE_PROMETHEUS_PORT" in why and "0 for no Prometheus" in why


@pytest.mark.skipif(find_binary("prometheus") is None, reason="needs prometheus on PATH (apt-get install prometheus)")
def test_a_missing_rules_folder_is_warned_about_naming_the_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # EVENTPIPE_PROMETHEUS_RULES_DIR misspelt as a path: the warning named the folder, not what sets it.
    prometheus = Prometheus(free_port(), tmp_path / "prometheus", "127.0.0.1:1", tmp_path / "none")
    try:
        with caplog.at_level(logging.WARNING, logger="eventpipe"):
            prometheus.start()
    finally:
        prometheus.stop()
    assert f"no rules directory at {tmp_path / 'none'} (EVENTPIPE_PROMETHEUS_RULES_DIR)" in caplog.text
