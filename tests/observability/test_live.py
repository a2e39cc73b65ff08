"""The rules and dashboards against a real Prometheus scraping `eventpipe up` while a new user sends it traffic.

Events, malformed payloads, and good and bad HTTP requests go in; then every rule
must evaluate cleanly and every dashboard query must be valid, with the ones
about ingest, the API, the broker and the SLOs showing that traffic. ClickHouse's
panels stay empty here: the native stack has no ClickHouse metrics endpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import observability as obs
from tests.support.mqtt import publish_raw
from tests.support.stack import Up, run_eventpipe
from tests.support.wait import wait_until

EVENTS = 2000
# One message per dead-letter reason a producer can cause, four times over.
MALFORMED = [
    ("events/bad", b"{not json"),
    ("events/bad", b"\xff\xfe not utf-8"),
    ("events/bad", b"[1, 2, 3]"),
    ("events/late", b'{"event_type": "late", "timestamp": "yesterday-ish"}'),
] * 4
# The API runs inside the worker's process natively, so only the worker's job reports process metrics.
NATIVE_EMPTY = re.compile(r'process_\w+\{job="api"')
SHARE_WITH_DATA = 0.7


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}?{query}", timeout=10) as response:
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                body = json.loads(text)  # a query error: 4xx with the reason
            except ValueError:
                body = {"status": "error", "error": f"{error.code}: {text[:200]!r}"}  # not ready yet
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def value(self, expr: str) -> float:
        answer = self.query(expr)
        result = answer["data"]["result"] if answer["status"] == "success" else []
        return float(result[0]["value"][1]) if result else float("nan")

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.get("/api/v1/rules")["data"]["groups"]
        return [{**rule, "group": group["name"]} for group in groups for rule in group["rules"]]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Up]:
    if shutil.which("prometheus") is None:
        pytest.fail(
            "prometheus is not installed, so `eventpipe up` cannot run it: apt-get install prometheus", pytrace=False
        )
    up = Up(tmp_path / "data", prometheus=True)
    try:
        yield up
    finally:
        up.kill()


def call_api(up: Up, path: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"http://127.0.0.1:{up.api_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the Request is for http://127.0.0.1
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def send_requests(up: Up) -> None:
    """Good and bad HTTP requests, as a new user tries the API."""
    key = up.generated_key
    for _ in range(5):
        assert call_api(up, "/healthz") == 200
        assert call_api(up, "/readyz") == 200
        call_api(up, "/events?limit=5", key)
        assert call_api(up, "/wp-login.php") == 404
        assert call_api(up, "/events?limit=0", key) >= 400
        assert call_api(up, "/events") >= 400  # no key


def evaluate_dashboards(prometheus: Prometheus) -> list[dict[str, Any]]:
    results = []
    for name, dashboard in obs.dashboards().items():
        for title, expr in obs.prometheus_queries(dashboard):
            answer = prometheus.query(obs.as_promql(expr))
            results.append(
                {
                    "board": name,
                    "title": title,
                    "expr": expr,
                    "valid": answer["status"] == "success",
                    "error": answer.get("error"),
                    "series": len(answer.get("data", {}).get("result", [])),
                    "expected_empty": obs.depends_on_a_dependency(expr) or bool(NATIVE_EMPTY.search(expr)),
                }
            )
    return results


def run_sql(data_dir: Path, queries: list[str]) -> list[dict[str, Any]]:
    """Each query in one child process: chDB opens one engine path per process."""
    code = (
        "import json, sys, clickhouse_connect\n"
        "client = clickhouse_connect.get_client(dsn=sys.argv[1])\n"
        "out = []\n"
        "for sql in json.load(sys.stdin):\n"
        "    try:\n"
        "        out.append({'rows': len(client.query(sql).result_rows)})\n"
        "    except Exception as exc:\n"
        "        out.append({'error': str(exc)[:400]})\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{(data_dir / 'clickhouse').resolve()}"],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_rules_and_dashboards_on_a_live_native_stack(stack: Up) -> None:
    started = time.monotonic()
    ready = stack.wait_ready()
    prometheus = Prometheus(stack.prometheus_port)
    assert f"prometheus={prometheus.url}" in ready, f"eventpipe up did not start Prometheus:\n{stack.output()}"

    # Traffic only once Prometheus has a first sample of every counter, so that it sees them move.
    wait_until(
        lambda: prometheus.value('sum(up{job=~"ingest-worker|api|mosquitto"})') == 3, timeout=20, what="first scrapes"
    )
    # A labelled series appears with its first request, and rate() sees no increase in a series' first
    # sample: a first round of requests creates them, a second one (after a scrape) shows as traffic.
    send_requests(stack)
    wait_until(
        lambda: prometheus.value('sum(eventpipe_http_requests_total{code=~"4.."})') > 0, timeout=20, what="a scrape"
    )
    published = run_eventpipe("publish", "--mqtt-url", stack.mqtt_url, "--count", str(EVENTS), "--rate", "500")
    assert published.returncode == 0, published.stderr
    assert publish_raw(stack.mqtt_url, MALFORMED) == len(MALFORMED)
    send_requests(stack)
    wait_until(
        lambda: (
            prometheus.value("sum(eventpipe_events_stored_total)") >= EVENTS
            and prometheus.value("sum(eventpipe_dead_letters_total)") >= len(MALFORMED)
            and prometheus.value('sum(eventpipe_http_requests_total{route="/readyz"})') >= 10
        ),
        timeout=30,
        what="Prometheus to scrape the traffic",
    )
    # The broker says its counts only at its next $SYS tick (every 10 s), then a scrape (5 s): a quick run
    # evaluated the panels before, and read the broker's traffic as 0.
    wait_until(
        lambda: prometheus.value("sum(rate(broker_publish_messages_received[1m]))") > 0,
        timeout=30,
        what="Prometheus to scrape the broker's count of that traffic",
    )

    # A recording rule evaluation after that: the SLIs of both the worker and the API are there.
    wait_until(lambda: prometheus.value("count(slo:sli_error:ratio_rate5m)") == 4, timeout=20, what="the SLIs")

    # Every rule evaluated at least once (the long-window group runs every 30 s), and healthy.
    wait_until(lambda: all(rule["health"] != "unknown" for rule in prometheus.rules()), timeout=40, what="rules")
    unhealthy = [
        (rule["group"], rule["name"], rule["health"], rule.get("lastError"))
        for rule in prometheus.rules()
        if rule["health"] != "ok" or rule.get("lastError")
    ]
    assert not unhealthy, unhealthy
    loaded = {rule["name"] for rule in prometheus.rules()}
    assert {rule["alert"] for rule in obs.alert_rules()} <= loaded, "Prometheus did not load the repository's rules"
    # The 30-day windows need two samples inside one evaluation: give them the rest of the time budget.
    with contextlib.suppress(AssertionError):  # if not, counted below with the panels that read them
        wait_until(
            lambda: prometheus.query("slo:error_budget_remaining:ratio")["data"]["result"],
            timeout=max(1.0, 50 - (time.monotonic() - started)),
            what="the long-window SLIs",
        )
    print(f"rules healthy and SLIs recorded after {time.monotonic() - started:.0f}s")

    results = evaluate_dashboards(prometheus)
    invalid = [(r["board"], r["title"], r["error"]) for r in results if not r["valid"]]
    assert not invalid, invalid
    ours = [r for r in results if not r["expected_empty"]]
    with_data = [r for r in ours if r["series"]]
    summary = (
        f"{len(results)} dashboard queries, all valid PromQL; {len(ours)} about ingest, the API, the broker and "
        f"the SLOs, {len(with_data)} of them returning data; {len(results) - len(ours)} about ClickHouse, "
        "Alertmanager or the API's own process (absent natively)"
    )
    print(summary)
    for board in sorted({r["board"] for r in ours}):
        mine = [r for r in ours if r["board"] == board]
        print(f"  {board}: {sum(1 for r in mine if r['series'])}/{len(mine)} with data")
    empty = [(r["board"], r["title"], r["expr"]) for r in ours if not r["series"]]
    assert len(with_data) >= SHARE_WITH_DATA * len(ours), f"{summary}; empty: {empty}"

    # What a user should see move on the dashboards after this traffic.
    rate = "$__rate_interval"
    freshness = f"sum by (le) (rate(eventpipe_event_freshness_seconds_bucket[{rate}]))"
    moving = {
        "events flowing": f"sum(rate(eventpipe_events_stored_total[{rate}]))",
        "dead letters by reason": f"sum by (reason) (rate(eventpipe_dead_letters_total[{rate}])) > 0",
        "freshness measured": f"histogram_quantile(0.99, {freshness})",
        "4xx answers": f'sum(rate(eventpipe_http_requests_total{{code=~"4.."}}[{rate}]))',
        "API SLIs": "slo:sli_error:ratio_rate5m",
        # Natively too, from `up`'s reading of the broker's $SYS values: the broker alerts can fire there.
        "broker traffic": f"sum(rate(broker_publish_messages_received[{rate}]))",
        "broker clients": "sum(broker_clients_connected)",
    }
    for what, expr in moving.items():
        answer = prometheus.query(obs.as_promql(expr))["data"]["result"]
        seen = answer
        if what.startswith("broker"):  # said in full if it fails: samples come only as Mosquitto's values change
            seen = [answer, prometheus.query("broker_publish_messages_received[2m]"), prometheus.query("up[2m]")]
        assert answer and all(float(series["value"][1]) > 0 or what == "API SLIs" for series in answer), (what, seen)
    reasons = prometheus.query(obs.as_promql(moving["dead letters by reason"]))["data"]["result"]
    assert {series["metric"]["reason"] for series in reasons} >= {"invalid_json", "invalid_utf8", "not_an_object"}
    slis = {series["metric"]["slo"] for series in prometheus.query("slo:sli_error:ratio_rate5m")["data"]["result"]}
    assert slis == {"ingest-freshness", "ingest-completeness", "api-availability", "api-latency"}

    # The dashboards' variables offer something to pick.
    for dashboard in obs.dashboards().values():
        for variable, metric, label in obs.variable_queries(dashboard):
            series = prometheus.get("/api/v1/series", **{"match[]": metric})["data"]
            assert any(label in labels for labels in series), f"${variable}: no {metric} with a {label} label"

    assert stack.stop() == 0, stack.output()

    # The events board's SQL, its macros expanded as the ClickHouse plugin does, on what was stored.
    now = int(time.time())
    sql = [
        (title, obs.as_clickhouse_sql(query, now - 3600, now + 60))
        for dashboard in obs.dashboards().values()
        for title, query in obs.clickhouse_queries(dashboard)
    ]
    answers = run_sql(stack.data_dir, [query for _title, query in sql])
    paired = list(zip(sql, answers, strict=True))
    failed = [(title, answer["error"]) for (title, _query), answer in paired if "error" in answer]
    assert not failed, failed
    rows = [title for (title, _query), answer in paired if answer["rows"]]
    print(f"{len(sql)} ClickHouse queries of the events board, all valid; {len(rows)} returning rows")
    assert len(rows) >= SHARE_WITH_DATA * len(sql), f"only {rows} returned rows"
