"""Alertmanager: pages and tickets routed apart, causes inhibit their symptoms, receivers from the environment."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from eventpipe.port import free_port
from tests.support import compose
from tests.support import observability as obs
from tests.support.wait import wait_until

CONFIG = obs.ALERTMANAGER / "alertmanager.yml"
ENTRYPOINT = obs.ALERTMANAGER / "entrypoint.sh"
URLS = {
    "ALERTMANAGER_PAGE_WEBHOOK_URL": "https://pager.example.com/hook?token=a1b2&team=data",
    "ALERTMANAGER_TICKET_WEBHOOK_URL": "http://tickets.internal:8080/alertmanager",
    "ALERTMANAGER_HEARTBEAT_WEBHOOK_URL": "https://hc-ping.example.com/0b5e-11ef",
}


def render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the entrypoint as the container does, with `true` standing in for Alertmanager."""
    rendered = tmp_path / "alertmanager.yml"
    variables = {key: value for key, value in os.environ.items() if not key.startswith("ALERTMANAGER_")}
    variables |= {
        "ALERTMANAGER_TEMPLATE": str(CONFIG),
        "ALERTMANAGER_RENDERED": str(rendered),
        "ALERTMANAGER_BINARY": "true",
        **env,
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "--storage.path=/alertmanager"],
        env=variables,
        capture_output=True,
        text=True,
        check=False,
    )


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [obs.tool("amtool", "prometheus-alertmanager"), *args], capture_output=True, text=True, check=False
    )


def test_with_urls_set_the_receivers_send_to_them(tmp_path: Path) -> None:
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text("left by the container's last start\n")
    rendered.chmod(0o644)
    done = render(tmp_path, **URLS)
    assert done.returncode == 0, done.stderr
    # The URLs may hold tokens (this one does): no other user of the container reads them.
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    checked = amtool("check-config", str(rendered))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    receivers = {receiver["name"]: receiver for receiver in yaml.safe_load(rendered.read_text())["receivers"]}
    assert receivers["page"]["webhook_configs"][0]["url"] == URLS["ALERTMANAGER_PAGE_WEBHOOK_URL"]
    assert receivers["ticket"]["webhook_configs"][0]["url"] == URLS["ALERTMANAGER_TICKET_WEBHOOK_URL"]
    assert receivers["heartbeat"]["webhook_configs"][0]["url"] == URLS["ALERTMANAGER_HEARTBEAT_WEBHOOK_URL"]


def test_without_urls_nothing_is_sent_and_the_config_is_the_committed_one(tmp_path: Path) -> None:
    done = render(tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "alertmanager.yml").read_text() == CONFIG.read_text()
    receivers = yaml.safe_load(CONFIG.read_text())["receivers"]
    assert {receiver["name"] for receiver in receivers} == {"page", "ticket", "heartbeat"}
    assert all(set(receiver) == {"name"} for receiver in receivers)


@pytest.mark.parametrize("url", ["pager.example.com/hook", 'https://x/"evil', "https://a b", "ftp://files/x"])
def test_a_value_that_is_not_a_plain_url_stops_the_start(tmp_path: Path, url: str) -> None:
    done = render(tmp_path, ALERTMANAGER_PAGE_WEBHOOK_URL=url)
    assert done.returncode != 0
    assert "ALERTMANAGER_PAGE_WEBHOOK_URL" in done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=page", "alertname=EventpipeWorkerDown"], "page"),
        (["severity=ticket", "alertname=EventpipeTargetDown"], "ticket"),
        (["alertname=SomethingWithoutSeverity"], "ticket"),
        (["severity=heartbeat", "alertname=EventpipeWatchdog"], "heartbeat"),
        # The receiver that fails may be either: it goes to both.
        (["severity=ticket", "alertname=EventpipeAlertmanagerNotificationsFailing"], "page,ticket"),
    ],
)
def test_routes_by_severity(labels: list[str], receiver: str) -> None:
    done = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [receiver]


def test_every_severity_of_the_rules_has_a_route() -> None:
    routes = yaml.safe_load(CONFIG.read_text())["route"]["routes"]
    matched = (re.fullmatch(r'severity="(\w+)"', route["matchers"][0]) for route in routes)
    routed = {match.group(1) for match in matched if match}
    assert {rule["labels"]["severity"] for rule in obs.alert_rules()} <= routed


def test_inhibition_names_only_alerts_that_exist() -> None:
    names = {rule["alert"] for rule in obs.alert_rules()}
    config = yaml.safe_load(CONFIG.read_text())
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            match = re.fullmatch(r'alertname(=~?)"([^"]+)"', matcher)
            if match:
                for name in match.group(2).split("|"):
                    assert name in names, f"inhibition names {name}, which is no alert"
        assert "stack" in inhibit["equal"], "confined to one Prometheus's alerts"


def test_worker_down_holds_back_what_follows_from_it() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    held_back = set()
    for inhibit in config["inhibit_rules"]:
        if inhibit["source_matchers"] == ['alertname="EventpipeWorkerDown"']:
            held_back |= set(re.findall(r"Eventpipe\w+", " ".join(inhibit["target_matchers"])))
    assert {"EventpipeNoCommits", "EventpipeIngestStalled"} <= held_back


@contextmanager
def serving(config: Path, storage: Path) -> Iterator[str]:
    """`config` in a real Alertmanager, alone (no cluster); its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            obs.tool("prometheus-alertmanager", "prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=20, what="Alertmanager ready")
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The committed config in a real Alertmanager; its URL."""
    with serving(CONFIG, tmp_path) as url:
        yield url


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def held_back(url: str, firing: list[dict[str, str]]) -> set[str]:
    """Of the alerts posted (labels each, stack "s"), those Alertmanager inhibits, as "alertname/instance"."""
    posted = [{"labels": {"stack": "s", **labels}} for labels in firing]
    httpx.post(f"{url}/api/v2/alerts", json=posted, timeout=5).raise_for_status()
    alerts = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
    assert len(alerts) == len(firing), alerts
    return {
        f"{alert['labels']['alertname']}/{alert['labels'].get('instance', '')}"
        for alert in alerts
        if alert["status"]["inhibitedBy"]
    }


def test_a_cause_on_one_worker_holds_back_that_workers_alerts_only(alertmanager: str) -> None:
    # Before, one disconnected or halted replica held back the pipeline-wide stall and the other replicas'.
    firing = [
        {"alertname": "EventpipeWorkerDisconnected", "severity": "page", "instance": "w1"},
        {"alertname": "EventpipeStorageHalted", "severity": "page", "instance": "w2"},
        {"alertname": "EventpipeNoCommits", "severity": "page", "instance": "w1"},
        {"alertname": "EventpipeStorageErrors", "severity": "ticket", "instance": "w2", "job": "ingest-worker"},
        {"alertname": "EventpipeNoCommits", "severity": "page", "instance": "w3"},
        {"alertname": "EventpipeStorageErrors", "severity": "ticket", "instance": "w3", "job": "ingest-worker"},
        {"alertname": "EventpipeIngestStalled", "severity": "page", "job": "ingest-worker"},
        {"alertname": "EventpipeFreshnessBudgetBurn", "severity": "page", "slo": "freshness"},
    ]
    assert held_back(alertmanager, firing) == {"EventpipeNoCommits/w1", "EventpipeStorageErrors/w2"}


def test_no_worker_at_all_holds_back_the_stall_it_causes(alertmanager: str) -> None:
    firing = [
        {"alertname": "EventpipeWorkerDown", "severity": "page", "job": "ingest-worker"},
        {"alertname": "EventpipeIngestStalled", "severity": "page", "job": "ingest-worker"},
        {"alertname": "EventpipeFreshnessBudgetBurn", "severity": "page", "slo": "freshness"},
        {"alertname": "EventpipeAPILatencyBudgetBurn", "severity": "page", "slo": "api-latency"},
    ]
    assert held_back(alertmanager, firing) == {"EventpipeIngestStalled/", "EventpipeFreshnessBudgetBurn/"}


def test_compose_runs_the_entrypoint_with_the_urls_from_env() -> None:
    service = compose.service("alertmanager")
    assert service["entrypoint"] == ["/bin/sh", "/etc/alertmanager/entrypoint.sh"]
    mounts = dict((target, source) for source, target in compose.bind_mounts("alertmanager"))
    assert mounts["/etc/alertmanager/entrypoint.sh"] == ENTRYPOINT
    assert mounts["/etc/alertmanager/alertmanager.yml"] == CONFIG
    for name in URLS:
        assert service["environment"][name] == f"${{{name}:-}}", "optional: unset means alerts stay in the UI"


class _Hook(BaseHTTPRequestHandler):
    """A dead man's switch: notes when each notification arrives."""

    arrived: list[float]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.arrived.append(time.monotonic())
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.timeout(180)
def test_the_heartbeat_reaches_the_dead_mans_switch_every_minute(tmp_path: Path) -> None:
    # .env.example and the runbook tell operators to alarm when a minute or two pass without it. With
    # repeat_interval equal to group_interval (1m each), Alertmanager re-sent only at every second flush,
    # every 2 minutes (prometheus/alertmanager#676): a switch set as documented alarmed all the time.
    arrived: list[float] = []
    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), type("Hook", (_Hook,), {"arrived": arrived}))
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        done = render(tmp_path, ALERTMANAGER_HEARTBEAT_WEBHOOK_URL=f"http://127.0.0.1:{hook.server_port}/ping")
        assert done.returncode == 0, done.stderr
        (tmp_path / "storage").mkdir()
        with serving(tmp_path / "alertmanager.yml", tmp_path / "storage") as url:
            watchdog = {"labels": {"stack": "s", "alertname": "EventpipeWatchdog", "severity": "heartbeat"}}
            httpx.post(f"{url}/api/v2/alerts", json=[watchdog], timeout=5).raise_for_status()
            wait_until(lambda: len(arrived) >= 2, timeout=150, what="two heartbeats")
    finally:
        hook.shutdown()
        hook.server_close()
    assert arrived[1] - arrived[0] < 75, f"the heartbeat came {arrived[1] - arrived[0]:.0f} s after the first"
