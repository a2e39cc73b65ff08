"""The API over a seeded ClickHouse, read as a read-only user, and the walks clients make through it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from eventpipe.api.app import create_app
from eventpipe.api.assembly import admin
from eventpipe.api.keyring import Keyring
from eventpipe.api.server import ApiServer
from eventpipe.config import Settings
from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.port import free_port
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect, engine_options
from eventpipe.store.reader import Reader

KEY = "test-key-1-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@contextmanager
def served(
    reader: Reader, keys: Keyring | None = None, registry: CollectorRegistry | None = None
) -> Iterator[ApiServer]:
    """The API on a real HTTP server, as clients reach it: chunked answers, disconnects, back-pressure."""
    server = ApiServer(create_app(reader, registry or CollectorRegistry(), keys or [KEY]), "127.0.0.1", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def readonly_reader(dsn: str, timeout_s: float | None = None, max_memory_bytes: int | None = None) -> Reader:
    """A reader whose every query runs with readonly=2, as the API's ClickHouse user does
    (clickhouse/users.d): ClickHouse refuses writes and DDL, so a query that user could not run
    fails the test. Per-query settings pass, as they do for that user (the lookup by id sends four).
    `max_memory_bytes`: every query fails (MEMORY_LIMIT_EXCEEDED) past that much of the engine's memory."""
    # The same engine options as eventpipe's own clients: chDB takes those of the first one.
    extra = {"chdb_options": engine_options(dsn)} if dsn.startswith("chdb") else {"autogenerate_session_id": False}
    settings = {"readonly": 2} | ({"max_memory_usage": max_memory_bytes} if max_memory_bytes else {})
    return Reader(clickhouse_connect.get_client(dsn=dsn, settings=settings, **extra), timeout_s)


def api_client(dsn: str, keys: Iterable[str] = (KEY,), registry: CollectorRegistry | None = None) -> TestClient:
    """The API over `dsn`; its metrics go to `registry` (the command serves it on its metrics listener)."""
    # raise_server_exceptions off: a 500 must reach the assertion as a status, as a client sees it.
    app = create_app(readonly_reader(dsn), registry or CollectorRegistry(), list(keys))
    return TestClient(app, raise_server_exceptions=False)


def scraped(registry: CollectorRegistry) -> str:
    """What a scrape of the API's metrics reads: the text the metrics listener serves for `registry`."""
    return generate_latest(registry).decode()


PARTNER_KEY = "partner-secret-0123456789"
AS_PARTNER = {"Authorization": f"Bearer {PARTNER_KEY}"}


def partner_client(dsn: str, keys_file: Path, event_types: list[str]) -> TestClient:
    """The API with KEY and, from `keys_file` (written here), PARTNER_KEY limited to `event_types`."""
    digest = hashlib.sha256(PARTNER_KEY.encode()).hexdigest()
    keys_file.write_text(json.dumps({"keys": [{"name": "partner", "sha256": digest, "event_types": event_types}]}))
    app = create_app(readonly_reader(dsn), CollectorRegistry(), Keyring([KEY], keys_file))
    return TestClient(app, raise_server_exceptions=False)


ADMIN_KEY = "test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_NAME = "up#generated"
ERASURE_SECRET = "test-erasure-secret-0123456789abcdef"  # noqa: S105 - a test value


def admin_client(dsn: str, backups: Callable[[Backups], Backups] | None = None, **settings: Any) -> TestClient:
    """The API with its /admin/ routes: KEY is a plain key, ADMIN_KEY the admin key `eventpipe up`
    would generate (named ADMIN_NAME). Reads go as a read-only user, admin writes through `dsn`,
    parsing under `settings`; with `backups`, the backup routes too, through what it makes of theirs."""
    configured = Settings(clickhouse_dsn=dsn, erasure_secret=ERASURE_SECRET, **settings)
    keys = Keyring([KEY], generated=ADMIN_KEY)
    means = admin(configured)
    taking = backups(means.backups(connect(dsn))) if backups else None
    app = create_app(readonly_reader(dsn), CollectorRegistry(), keys, backups=taking, admin=means)
    return TestClient(app, raise_server_exceptions=False)


def event(topic: str, body: dict[str, Any], received_ms: int) -> Event:
    parsed = parse(topic, json.dumps(body).encode(), received_ms, Limits())
    assert isinstance(parsed, Event), parsed
    return parsed


def rejection(topic: str, payload: bytes, received_ms: int) -> Rejection:
    parsed = parse(topic, payload, received_ms, Limits())
    assert isinstance(parsed, Rejection), parsed
    return parsed


def walk(client: httpx.Client, path: str, headers: dict[str, str] = AUTH, **params: Any) -> Iterator[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor as a client would."""
    cursor = params.pop("cursor", None)
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        yield from page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return


# Requests a hostile or careless client sends: each must get a 4xx with a reason, never a 5xx.
HOSTILE = [
    "/events?limit=0",
    "/events?limit=1001",
    "/events?limit=-1",
    "/events?limit=1e3",
    "/events?limit=abc",
    # pydantic's lax integers took these as 10, 1, 1 and 1: 200.
    "/events?limit=1_0",
    "/feed?limit=1.0",
    "/stats/event-types?limit=%201",
    "/stats/breakdown?by=properties.browser&limit=%2B1",
    "/events?limit=" + "9" * 400,
    "/events?since=yesterday",
    "/events?since=1e999",
    "/events?since=NaN",
    "/events?until=99999999999999999999999999",
    "/events?since=-5",
    "/events?since=2026-13-45T99:99:99Z",
    "/events?since=2026-03-01T00:00:00Z%00garbage",  # read up to the NUL: 200
    "/events?since=2026-03-02&until=2026-03-01",
    "/events?cursor=garbage",
    "/events?cursor=" + "A" * 5000,
    "/events?cursor=" + base64.urlsafe_b64encode(b'[1, "x", "y", "z"]').decode(),
    "/events?cursor=" + base64.urlsafe_b64encode(b"[1, 10, 5, null]").decode(),
    "/events?cursor=%00%01%02",
    "/events?event_type=" + "x" * 5000,
    "/events?user_id=" + "%F0%9F%92%A9" * 300,
    "/events/" + "y" * 5000,
    "/events/does-not-exist",
    "/events/'%20OR%201=1%20--",
    "/stats/event-types?since=not-a-time",
    "/stats/event-types?since=2026-03-02&until=2026-03-02",
    "/stats/timeseries?interval=7m",
    "/stats/timeseries?interval=1m&since=1970-01-01",
    "/stats/timeseries?interval=",
    "/stats/timeseries?until=0",
    "/dead-letters?limit=100000",
    "/dead-letters?reason=" + "r" * 1000,
    "/dead-letters?cursor=e30",
    "/dead-letters?status=done",
    "/events?evnt_type=click",
    "/stats/event-types?limit=0",
    "/stats/event-types?limit=1001",
    "/events?limit=5&limit=6",
    "/nope",
    "/events/../../etc/passwd",
    "/events?where=country=FR",
    "/events?where=properties.amount>abc",
    "/events?where=properties.amount>=1e999",
    "/events?where=properties.a.b.c.d.e.f.g.h.i=1",
    "/events?where=properties.a'b=1",
    "/events?where=properties.country",
    "/events?where=user_id>5",
    "/events?where=" + "properties.x=" + "y" * 5000,
    "/stats/event-types?where=properties..x=1",
    "/stats/timeseries?where=properties.x!1",
    "/stats/breakdown",
    "/stats/breakdown?by=country",
    "/stats/breakdown?by=properties",
    "/stats/breakdown?by=event_type&metric=median:properties.amount",
    "/stats/breakdown?by=event_type&metric=sum:user_id",
    "/stats/breakdown?by=event_type&limit=1001",
    "/stats/breakdown?by=event_type&by=topic",
    "/dead-letters?reason=' OR ''='",  # not one of the reasons
]
# Hostile values that are valid requests: they must be answered as plain data, never as SQL.
INJECTIONS = [
    "/events?event_type=' OR 1=1 --",
    "/events?event_type=click'); DROP TABLE events; --",
    "/events?user_id=\\' UNION SELECT * FROM system.users --",
    "/events?user_id={limit:UInt32}",
    "/events?event_type=%00",
    "/events?user_id=%E2%80%AE%F0%9F%92%A9",
    "/events?where=properties.country=' OR 1=1 --",
    "/events?where=properties.x={limit:UInt32}",
    "/events?where=user_id=\\' UNION SELECT * FROM system.users --",
    "/events?where=properties.x=1&where=properties.x=') OR 1=1 --",
    "/stats/breakdown?by=properties.country&where=event_type=' OR ''='",
]


def requests(registry: CollectorRegistry, code: str, route: str = "/export") -> float | None:
    """How many GET requests of `route` the API counted with status `code`."""
    labels = {"route": route, "method": "GET", "code": code}
    return registry.get_sample_value("eventpipe_http_requests_total", labels)
