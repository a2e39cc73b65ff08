"""The API over a seeded ClickHouse, read as a read-only user, and the walks clients make through it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import clickhouse_connect
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.store.reader import Reader

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


def readonly_reader(dsn: str) -> Reader:
    """A reader whose every query runs with readonly=1: ClickHouse refuses writes and any SET or
    per-query setting, so a query the API's read-only user could not run fails the test."""
    extra = {} if dsn.startswith("chdb") else {"autogenerate_session_id": False}
    return Reader(clickhouse_connect.get_client(dsn=dsn, settings={"readonly": 1}, **extra))


def api_client(dsn: str, keys: Iterable[str] = (KEY,)) -> TestClient:
    # raise_server_exceptions off: a 500 must reach the assertion as a status, as a client sees it.
    app = create_app(readonly_reader(dsn), CollectorRegistry(), list(keys))
    return TestClient(app, raise_server_exceptions=False)


def event(topic: str, body: dict[str, Any], received_ms: int) -> Event:
    parsed = parse(topic, json.dumps(body).encode(), received_ms, Limits())
    assert isinstance(parsed, Event), parsed
    return parsed


def rejection(topic: str, payload: bytes, received_ms: int) -> Rejection:
    parsed = parse(topic, payload, received_ms, Limits())
    assert isinstance(parsed, Rejection), parsed
    return parsed


def walk(client: TestClient, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor as a client would."""
    cursor = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=AUTH)
        assert response.status_code == 200, response.text
        page = response.json()
        yield from page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return
