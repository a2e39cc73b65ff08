"""Prometheus, Alertmanager and Grafana configs: valid for their own tools, and pointing at what compose runs."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import yaml

from tests.support import compose

PROMETHEUS = compose.REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER = compose.REPO / "alertmanager" / "alertmanager.yml"
GRAFANA = compose.REPO / "grafana" / "provisioning"
DUMMY = {name: "x" for name in compose.required_variables()}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed to check the config: apt-get install {package}", pytrace=False)
    return path


def test_prometheus_config_is_valid() -> None:
    done = subprocess.run(
        [tool("promtool", "prometheus"), "check", "config", "--syntax-only", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_config_is_valid() -> None:
    done = subprocess.run(
        [tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def container_port(service: str) -> int:
    """The port each scraped service listens on, read from where it is configured."""
    if service in ("ingest-worker", "api", "mosquitto-exporter"):
        return int(compose.environment(service, DUMMY)["EVENTPIPE_METRICS_PORT"])
    if service == "clickhouse":
        config = ET.parse(compose.REPO / "clickhouse" / "config.d" / "eventpipe.xml").getroot()  # noqa: S314 - ours
        return int(config.findtext("prometheus/port") or 0)
    published = compose.interpolate(str(compose.service(service)["ports"][0]), DUMMY)
    return int(published.rsplit(":", 1)[1])


def scrape_targets() -> dict[str, tuple[str, int]]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS.read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets[job["job_name"]] = (host, int(port))
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                targets[job["job_name"]] = (name, int(dns["port"]))
    return targets


def test_prometheus_scrapes_every_part_where_it_listens() -> None:
    scraped = {host: port for host, port in scrape_targets().values()}
    for service in ("ingest-worker", "api", "clickhouse", "mosquitto-exporter", "alertmanager"):
        assert service in scraped, f"nothing scrapes {service}"
        assert scraped[service] == container_port(service), f"{service} listens on {container_port(service)}"
    assert scraped["localhost"] == 9090


def test_every_worker_replica_is_scraped() -> None:
    # One static target would hit a random replica per scrape; DNS discovery lists them all.
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "ingest-worker"]
    assert job["dns_sd_configs"][0]["type"] == "A"


def test_prometheus_reads_the_rules_compose_mounts() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    mounts = dict((target, source) for source, target in compose.bind_mounts("prometheus"))
    # The entrypoint copies the mounted rules there, with absolute runbook links (tests/observability/test_runbooks.py).
    assert config["rule_files"] == ["/tmp/rules/*.yml"]
    assert mounts["/etc/prometheus/rules"] == compose.REPO / "prometheus" / "rules"
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == [f"alertmanager:{container_port('alertmanager')}"]


def test_grafana_uses_the_stacks_prometheus() -> None:
    (datasource,) = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{container_port('prometheus')}"


def test_grafana_loads_the_dashboards_from_the_repository() -> None:
    (provider,) = yaml.safe_load((GRAFANA / "dashboards" / "eventpipe.yml").read_text())["providers"]
    mounts = dict((target, source) for source, target in compose.bind_mounts("grafana"))
    assert mounts[provider["options"]["path"]] == compose.REPO / "grafana" / "dashboards"
    assert mounts["/etc/grafana/provisioning"] == GRAFANA


def test_grafana_admin_password_comes_from_the_environment() -> None:
    environment = compose.service("grafana")["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
