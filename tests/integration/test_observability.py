"""What the worker and the API tell Prometheus, checked against real traffic."""

from __future__ import annotations

import json
import re
import time

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from eventpipe.api.app import create_app
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.reader import Reader
from tests.support import observability as obs
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.wait import wait_until


def test_freshness_is_measured_from_the_event_time(broker: LocalBroker | ContainerBroker, clickhouse_dsn: str) -> None:
    migrate(connect(clickhouse_dsn))
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        # One event stamped 120 s ago, as a producer with a backlog would send it.
        old = time.time_ns() // 1_000_000 - 120_000
        publish_raw(broker.url, [("events/late", json.dumps({"event_id": "late", "timestamp": old}).encode())])
        wait_until(lambda: run.metric("eventpipe_event_freshness_seconds_count") == 1, what="one observation")
        assert run.metric("eventpipe_event_freshness_seconds_bucket", le="60.0") == 0
        assert run.metric("eventpipe_event_freshness_seconds_bucket", le="300.0") == 1
        assert 120 <= run.metric("eventpipe_event_freshness_seconds_sum") < 150
        assert run.metric("eventpipe_ingest_latency_seconds_bucket", le="5.0") == 1


def test_probes_report_freshness_while_no_producer_sends(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str
) -> None:
    migrate(connect(clickhouse_dsn))
    # The worker's own prober, as every entry point assembles it.
    settings = settings_for(broker.url, clickhouse_dsn, probe_interval_s=0.2)
    with running_worker(settings) as run:
        wait_until(lambda: run.metric("eventpipe_probe_last_commit_timestamp_seconds") > 0, what="a probe")
        assert 0 <= run.metric("eventpipe_probe_freshness_seconds") < 5
        assert run.metric("eventpipe_probes_sent_total") >= 1
        assert run.reader.count_events() == 0, "probes are not users' events"


def test_api_metrics_use_route_templates_not_raw_paths(clickhouse_dsn: str) -> None:
    registry = CollectorRegistry()
    client = TestClient(create_app(Reader(connect(clickhouse_dsn)), registry, ["key"]))
    assert client.get("/healthz").status_code == 200
    for path in ("/nope", "/wp-admin.php", "/../../etc/passwd"):
        assert client.get(path).status_code == 404
    for method in ("FOO1", "BAR2"):
        client.request(method, "/healthz")
    text = generate_latest(registry).decode()
    assert 'eventpipe_http_requests_total{code="200",method="GET",route="/healthz"} 1.0' in text
    assert 'code="405",method="other",route="/healthz"} 2.0' in text
    assert "FOO1" not in text
    # Primed at 0 before any request, so rate() sees the first error of a route.
    assert 'eventpipe_http_requests_total{code="500",method="GET",route="/readyz"} 0.0' in text
    assert 'eventpipe_http_requests_total{code="404",method="GET",route="unmatched"} 3.0' in text
    assert "wp-admin" not in text


def test_the_api_slis_count_reads_and_readiness_but_not_the_documentation_pages(clickhouse_dsn: str) -> None:
    # The SLIs' route filters, as the rules hold them, against the labels the API really gives: the pages
    # anyone may load without a key (and Swagger UI's 1.5 MB script, slow on a slow link) stay out.
    migrate(connect(clickhouse_dsn))
    registry = CollectorRegistry()
    client = TestClient(create_app(Reader(connect(clickhouse_dsn)), registry, ["key"]))
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js", "/readyz"):
        assert client.get(path).status_code == 200, path
    assert client.get("/events", headers={"Authorization": "Bearer key"}).status_code == 200
    text = generate_latest(registry).decode()
    counted = re.findall(r'eventpipe_http_requests_total\{code="200",method="GET",route="([^"]+)"\} (\S+)', text)
    answered = {route for route, count in counted if float(count) > 0}  # every route is primed at 0
    # /openapi.json is served by FastAPI itself, outside the routes the metrics name: "unmatched".
    documentation = {"/docs", "/redoc", "/docs/assets/{name}", "unmatched"}
    assert answered == documentation | {"/readyz", "/events"}
    slos = (obs.RULES / "slos.yml").read_text()
    filters = set(re.findall(r'route!~"([^"]+)"', slos))
    assert len(filters) == 2, filters  # availability's, and latency's (which leaves out exports and /admin/ too)
    for left_out in filters:
        assert {route for route in answered if re.fullmatch(left_out, route)} == documentation, left_out
