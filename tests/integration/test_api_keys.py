"""Keys from the keys file over the real engine: scopes on every route, revocation, rate limits, metrics."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api import error
from eventpipe.api import keyring as keyring_module
from eventpipe.api.app import create_app
from eventpipe.api.auth import KeyCheck, admin_only
from eventpipe.api.keyring import Keyring
from eventpipe.api.server import ApiServer
from eventpipe.api.throttle import Throttle
from eventpipe.stack.certificate import local_authority
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import AUTH, KEY, event, readonly_reader, rejection, requests, scraped, served, walk

MARCH_MS = 1_772_323_200_000
HOUR_MS = 3_600_000
PARTNER, LIMITED, OPS = "partner-secret-0123456789", "limited-secret-0123456789", "ops-secret-0123456789"
AS_PARTNER = {"Authorization": f"Bearer {PARTNER}"}
AS_LIMITED = {"Authorization": f"Bearer {LIMITED}"}
# Everything of the types the partner may not see carries this word: in ids, users, properties and types.
HIDDEN = "hidden"
PURCHASES = 40


def entry(name: str, key: str, **rights: object) -> dict[str, object]:
    return {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), **rights}


def write_keys(path: Path, *entries: dict[str, object]) -> None:
    path.write_text(json.dumps({"keys": list(entries)}))


PARTNER_TYPES = ["purchase", "refund"]
KEYS = (
    entry("partner", PARTNER, event_types=PARTNER_TYPES),
    entry("limited", LIMITED, requests_per_minute=3),
    entry("ops", OPS, admin=True),
)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_keys(path, *KEYS)
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def api(clickhouse_dsn: str, keys_file: Path, clock: Clock, registry: CollectorRegistry) -> TestClient:
    client = connect(clickhouse_dsn)
    migrate(client)
    writer = Writer(client)
    rows = [
        event("events/purchase", {"event_id": f"p{i}", "timestamp": MARCH_MS + i, "user_id": "u1"}, MARCH_MS)
        for i in range(PURCHASES)
    ] + [
        event(
            f"events/{HIDDEN}_{kind}",
            {"event_id": f"{HIDDEN}-{kind}-{i}", "timestamp": MARCH_MS + i, "user_id": f"{HIDDEN}-user", HIDDEN: 1},
            MARCH_MS,
        )
        for kind in ("click", "view")
        for i in range(30)
    ]
    assert writer.insert_events(rows) == []
    writer.insert_dead_letters([rejection(f"events/{HIDDEN}", b"{" + HIDDEN.encode(), MARCH_MS)])
    keyring = Keyring([KEY], keys_file)
    app = create_app(readonly_reader(clickhouse_dsn), registry, keyring, "", Throttle(clock))
    return TestClient(app, raise_server_exceptions=False)


def test_a_scoped_key_sees_only_its_types_on_every_route(api: TestClient) -> None:
    items = list(walk(api, "/events", headers=AS_PARTNER, limit=7))
    assert len(items) == PURCHASES and {item["event_type"] for item in items} == {"purchase"}
    assert list(walk(api, "/events", headers=AS_PARTNER, event_type=f"{HIDDEN}_click")) == []
    assert list(walk(api, "/events", headers=AS_PARTNER, user_id=f"{HIDDEN}-user")) == []
    assert len(list(walk(api, "/events", headers=AS_PARTNER, user_id="u1"))) == PURCHASES

    assert api.get("/events/p3", headers=AS_PARTNER).json()["event_id"] == "p3"
    other = api.get(f"/events/{HIDDEN}-click-3", headers=AS_PARTNER)
    assert (other.status_code, other.json()["error"]) == (404, "not_found"), "as if it did not exist"
    assert api.head(f"/events/{HIDDEN}-click-3", headers=AS_PARTNER).status_code == 404
    # Naming the type opens nothing: it narrows the key's types, never widens them.
    by_type = {"event_type": f"{HIDDEN}_click"}
    assert api.get(f"/events/{HIDDEN}-click-3", params=by_type, headers=AS_PARTNER).status_code == 404
    assert api.get(f"/events/{HIDDEN}-click-3", params=by_type, headers=AUTH).status_code == 200

    # All time (the tally by day), a window (by hour, ends counted live), and a user (the plain query).
    purchases = {"items": [{"event_type": "purchase", "count": PURCHASES}], "total": PURCHASES, "types": 1}
    assert api.get("/stats/event-types", headers=AS_PARTNER).json() == purchases
    window = {"since": MARCH_MS - HOUR_MS // 2, "until": MARCH_MS + 2 * HOUR_MS + 1}
    assert api.get("/stats/event-types", params=window, headers=AS_PARTNER).json() == purchases
    for interval in ("1m", "1h"):
        series = api.get("/stats/timeseries", params={**window, "interval": interval}, headers=AS_PARTNER).json()
        assert sum(bucket["count"] for bucket in series["items"]) == PURCHASES, interval
        hidden = {**window, "interval": interval, "event_type": f"{HIDDEN}_view"}
        none = api.get("/stats/timeseries", params=hidden, headers=AS_PARTNER).json()["items"]
        assert sum(bucket["count"] for bucket in none) == 0

    refused = api.get("/dead-letters", headers=AS_PARTNER)
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "forbidden",
        "detail": "this key sees only some event types, and this endpoint serves all of them",
    }
    # Keys without a scope see what they always saw.
    assert api.get("/stats/event-types", headers=AUTH).json()["total"] == PURCHASES + 60
    assert api.get("/dead-letters", headers={"Authorization": f"Bearer {OPS}"}).status_code == 200


def test_no_route_serves_a_scoped_key_data_of_another_type(api: TestClient) -> None:
    """Every GET route of the OpenAPI document, routes added later included, called as each client would."""
    document = api.get("/openapi.json").json()
    answered = {}
    for template, operations in document["paths"].items():
        if "get" not in operations or not operations["get"].get("security"):
            continue  # open routes (health) serve no events
        params: dict[str, Any] = {}
        path = template
        for parameter in operations["get"].get("parameters", []):
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", f"{HIDDEN}-click-1")
            elif parameter.get("required"):
                params[parameter["name"]] = _example(parameter)
        if "since" in {parameter["name"] for parameter in operations["get"].get("parameters", [])}:
            params.setdefault("since", MARCH_MS - HOUR_MS)
        for headers, scoped in ((AS_PARTNER, True), (AUTH, False)):
            response = api.get(path, params=params, headers=headers)
            assert response.status_code in (200, 403, 404), (template, response.text)
            if scoped:
                assert HIDDEN not in response.text, f"{template} served another type's data to a scoped key"
                answered[template] = response.status_code
            elif template in ("/events", "/stats/event-types"):
                assert HIDDEN in response.text, "the data the scoped key must not see is there"
    assert answered["/events"] == answered["/stats/timeseries"] == 200
    assert (answered["/events/{event_id}"], answered["/dead-letters"]) == (404, 403)


def _example(parameter: dict[str, Any]) -> Any:
    schema = parameter.get("schema", {})
    for source in (parameter, schema):
        if source.get("examples"):
            examples = source["examples"]
            return examples[0] if isinstance(examples, list) else next(iter(examples.values()))["value"]
        if "example" in source:
            return source["example"]
    return schema.get("default") or schema.get("enum", ["x"])[0]


def test_a_key_removed_from_the_file_is_refused_at_its_next_request(api: TestClient, keys_file: Path) -> None:
    assert api.get("/events", headers=AS_PARTNER).status_code == 200
    write_keys(keys_file, *KEYS[1:])
    revoked = api.get("/events", headers=AS_PARTNER)
    assert (revoked.status_code, revoked.json()["error"]) == (401, "unauthorized")
    assert api.get("/events", headers={"Authorization": f"Bearer {OPS}"}).status_code == 200
    write_keys(keys_file, *KEYS)
    assert api.get("/events", headers=AS_PARTNER).status_code == 200, "and admitted again once it is back"


def stored_purchases(dsn: str, count: int = 30_000) -> None:
    """A migrated store of `count` purchases, enough for an export of three pages."""
    client = connect(dsn)
    migrate(client)
    purchases = [
        event("events/purchase", {"event_id": f"p{i}", "timestamp": MARCH_MS + i}, MARCH_MS) for i in range(count)
    ]
    assert Writer(client).insert_events(purchases) == []


@pytest.mark.parametrize(
    ("rights", "cut"),
    [(None, True), ({"event_types": ["refund"]}, True), ({"name": "renamed", "event_types": PARTNER_TYPES}, False)],
    ids=["removed", "narrowed", "renamed"],
)
def test_an_export_whose_key_is_revoked_or_narrowed_while_it_runs_is_cut_off(
    clickhouse_dsn: str, keys_file: Path, rights: dict[str, object] | None, cut: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Checked once, at its start: a revoked key's export went on for hours at a slow reader's pace,
    # with every later event of the types it no longer had (found by an attack on tenant isolation).
    stored_purchases(clickhouse_dsn)
    changed = [*KEYS[1:]]
    if rights is not None:
        granted = dict(rights)
        changed.insert(0, entry(str(granted.pop("name", "partner")), PARTNER, **granted))
    served_lines, registry = 0, CollectorRegistry()
    with (
        caplog.at_level(logging.INFO),
        served(readonly_reader(clickhouse_dsn), Keyring([KEY], keys_file), registry=registry) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("GET", "/export", headers=AS_PARTNER) as answer,
    ):
        lines = answer.iter_lines()
        assert json.loads(next(lines))["event_type"] == "purchase"
        write_keys(keys_file, *changed)
        with pytest.raises(httpx.RemoteProtocolError) if cut else contextlib.nullcontext():  # cut: no last chunk
            for _ in lines:
                served_lines += 1
    if cut:  # the page being sent, and the next one if it was under way, go out: 10,000 events each
        assert served_lines < 20_000, f"{served_lines} of 30,000 events served after the change"
    else:  # the same key, named anew
        assert served_lines == 29_999
    # An admin's change, not the API failing: none of the availability SLO's budget spent (it counted 500).
    assert [requests(registry, code) for code in ("200", "403", "500")] == ([0, 1, 0] if cut else [1, 0, 0])
    # Nor an ERROR line, which an alert on the log would page for: a warning that names the cut.
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert any("cut off after" in record.getMessage() for record in caplog.records) == cut


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_an_export_cut_off_ends_in_an_error_for_an_http_1_0_client_too(
    clickhouse_dsn: str, keys_file: Path, tmp_path: Path, tls: bool
) -> None:
    # HTTP/1.0 has no chunks: the body ends where the connection does. Closed with a FIN, an export cut off
    # after its first page looked complete (curl --http1.0 exited 0), and so would it through a proxy that
    # speaks HTTP/1.0 to the API, as nginx does by default; over TLS, a close sends close_notify first, as
    # clean an end. It is reset instead.
    stored_purchases(clickhouse_dsn)
    files = local_authority(tmp_path / "tls") if tls else None
    app = create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), Keyring([KEY], keys_file))
    api = ApiServer(app, "127.0.0.1", 0, files.cert if files else None, files.key if files else None)
    api.start()
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as plain:
            connection: socket.socket = plain
            if files:
                context = ssl.create_default_context(cafile=str(files.ca))
                # A TLS end without close_notify raises, as it does in curl; with it, recv gives b"".
                connection = context.wrap_socket(plain, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
            connection.sendall(f"GET /export HTTP/1.0\r\nAuthorization: Bearer {PARTNER}\r\n\r\n".encode())
            got = connection.recv(65536)
            assert got.startswith(b"HTTP/1.1 200"), got[:100]
            write_keys(keys_file, *KEYS[1:])  # the partner's key removed while its export runs
            failed = False
            try:
                while chunk := connection.recv(1 << 20):
                    got += chunk
            except (ConnectionResetError, ssl.SSLEOFError):
                failed = True
    finally:
        api.stop()
    lines = got.partition(b"\r\n\r\n")[2].count(b"\n")
    assert lines < 30_000, "not cut off: the test did not break the export"
    assert failed, f"cut off after {lines} of 30,000 events, and the connection ended as if it were complete"


def test_a_broken_file_keeps_the_keys_it_had_and_says_so_in_the_metrics(
    api: TestClient, keys_file: Path, registry: CollectorRegistry
) -> None:
    keys_file.write_text('{"keys": [{"name": "partner", "sha256": "oops"}]}')
    assert api.get("/events", headers=AS_PARTNER).status_code == 200
    metrics = scraped(registry)
    assert "eventpipe_api_keys_file_invalid 1.0" in metrics
    assert 'eventpipe_api_keys_file_loads_total{result="invalid"} 1.0' in metrics
    write_keys(keys_file, *KEYS[1:])
    assert "eventpipe_api_keys_file_invalid 0.0" in scraped(registry), "a scrape reads the file too"
    assert api.get("/events", headers=AS_PARTNER).status_code == 401


def test_over_its_rate_a_key_gets_429_with_retry_after(api: TestClient, clock: Clock) -> None:
    for second in range(3):
        clock.now = 5000.0 + second
        assert api.get("/events", headers=AS_LIMITED).status_code == 200
    clock.now = 5030.5
    limited = api.get("/stats/event-types", headers=AS_LIMITED)
    assert limited.status_code == 429
    detail = "this key may make 3 requests per minute; retry in 30 s"
    assert limited.json() == {"error": "rate_limited", "detail": detail}
    assert limited.headers["retry-after"] == "30"
    assert api.head("/events", headers=AS_LIMITED).headers["retry-after"] == "30"
    # Bad requests count too (they cost as much to refuse); other keys and open routes are not limited.
    assert api.get("/events?limit=0", headers=AS_LIMITED).status_code == 429
    assert all(api.get("/events", headers=AS_PARTNER).status_code == 200 for _ in range(5))
    assert api.get("/healthz").status_code == 200
    clock.now = 5060.0
    assert api.get("/events", headers=AS_LIMITED).status_code == 200, "once the first request is a minute old"
    assert api.get("/events", headers=AS_LIMITED).status_code == 429


def test_requests_are_counted_per_key_name_never_the_key(api: TestClient, registry: CollectorRegistry) -> None:
    api.get("/events", headers=AS_PARTNER)
    api.get("/dead-letters", headers=AS_PARTNER)
    api.head("/events", headers=AS_PARTNER)
    for _ in range(4):
        api.get("/events", headers=AS_LIMITED)
    api.get("/events", headers=AUTH)
    api.get("/events", headers={"Authorization": "Bearer not-a-key"})
    text = scraped(registry)
    counted = {
        (labels["key"], labels["code"]): float(value)
        for line in text.splitlines()
        if line.startswith("eventpipe_api_key_requests_total{")
        for labels, value in [_sample(line)]
    }
    assert {key: n for key, n in counted.items() if n} == {
        ("partner", "200"): 2,
        ("partner", "403"): 1,
        ("limited", "200"): 3,
        ("limited", "429"): 1,
        ("env#1", "200"): 1,
    }
    assert counted[("ops", "429")] == 0, "every key's series exist from the start"
    assert 'eventpipe_api_keys{source="file"} 3.0' in text and 'eventpipe_api_keys{source="env"} 1.0' in text
    for secret in (PARTNER, LIMITED, OPS, KEY, "not-a-key", hashlib.sha256(PARTNER.encode()).hexdigest()):
        assert secret not in text


def _sample(line: str) -> tuple[dict[str, str], str]:
    labels, value = line.rsplit(" ", 1)
    return dict(re.findall(r'(\w+)="([^"]*)"', labels)), value


def test_openapi_documents_the_refusals_with_examples(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    limited = paths["/events"]["get"]["responses"]["429"]
    assert limited["content"]["application/json"]["example"]["error"] == "rate_limited"
    assert "Retry-After" in limited["headers"]
    forbidden = paths["/dead-letters"]["get"]["responses"]["403"]
    assert forbidden["content"]["application/json"]["example"]["error"] == "forbidden"


def test_admin_routes_admit_admin_keys_only(keys_file: Path) -> None:
    keyring = Keyring([KEY], keys_file, generated="operator-key")
    admin = APIRouter(dependencies=[Depends(KeyCheck(keyring))])

    @admin.get("/admin/ping", dependencies=[Depends(admin_only)])
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    app = FastAPI()
    error.install(app)
    app.include_router(admin)
    client = TestClient(app, raise_server_exceptions=False)
    for key, status in ((OPS, 200), ("operator-key", 200), (KEY, 403), (PARTNER, 403), ("nope", 401)):
        assert client.get("/admin/ping", headers={"Authorization": f"Bearer {key}"}).status_code == status, key


def test_a_keys_file_slow_to_read_holds_up_no_other_request(
    clickhouse_dsn: str, keys_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key check runs on the event loop; only a changed file is read, in the
    # thread pool. Read on the loop, this read would stop every request until
    # it ended: here it waits for /healthz to be answered, so it would never end.
    migrate(connect(clickhouse_dsn))
    keyring = Keyring([KEY], keys_file)
    read, answered = threading.Event(), threading.Event()

    def slow_read(path: Path) -> bytes:
        read.set()
        answered.wait(10)
        return path.read_bytes()

    monkeypatch.setattr(keyring_module, "_read", slow_read)
    with served(readonly_reader(clickhouse_dsn), keyring) as server, ThreadPoolExecutor(1) as pool:
        write_keys(keys_file, *KEYS[1:])  # partner revoked: the next keyed request reads the file
        keyed = pool.submit(httpx.get, f"{server.url}/events", headers=AS_PARTNER, timeout=30)
        assert read.wait(10), "the changed file was not read"
        try:
            health = httpx.get(f"{server.url}/healthz", timeout=5)
        finally:
            answered.set()
        assert health.status_code == 200
        assert keyed.result().status_code == 401, "and the request that read it sees the revocation"


def test_a_removed_keys_series_are_gone_from_the_next_scrape(
    api: TestClient, keys_file: Path, registry: CollectorRegistry
) -> None:
    # Rotated under new names (partner-2026-11, partner-2026-12, ...), keys left series behind until a
    # restart: without end, for an operator who names each key by its date.
    assert api.get("/events", headers=AS_PARTNER).status_code == 200
    assert registry.get_sample_value("eventpipe_api_key_requests_total", {"key": "partner", "code": "200"}) == 1
    write_keys(keys_file, *KEYS[1:])
    text = scraped(registry)  # no request in between: the scrape itself sees the file changed
    assert 'key="partner"' not in text
    assert 'eventpipe_api_key_requests_total{code="200",key="limited"} 0.0' in text
    write_keys(keys_file, *KEYS)  # back: counted from 0 again, a new series as far as Prometheus knows
    assert api.get("/events", headers=AS_PARTNER).status_code == 200
    assert registry.get_sample_value("eventpipe_api_key_requests_total", {"key": "partner", "code": "200"}) == 1
