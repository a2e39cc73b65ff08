"""GET /feed over HTTP, read as a read-only user: a client following `next` gets each event once,
tokens survive a restart with the same secret, and anything else in `after` gets a 422."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.api.cursor import Cursors
from eventpipe.api.keyring import Keyring
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import AUTH, KEY, event, readonly_reader
from tests.support.shared import SharedStores

SECRET = "feed-test-cursor-secret-0123456789abcdef"  # noqa: S105 - a test key
DAY_MS = 86_400_000


def app(clickhouse_dsn: str, secret: str = SECRET) -> TestClient:
    made = create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), [KEY], secret)
    return TestClient(made, raise_server_exceptions=False)


def page(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/feed", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "next", "complete_until"} and body["next"]
    return body


def follow(client: TestClient, after: str | None, **params: Any) -> tuple[list[str], str]:
    """Every id served until a page comes back empty, and the token to poll with from there."""
    ids: list[str] = []
    while True:
        body = page(client, **params, **({"after": after} if after else {}))
        ids += [item["event_id"] for item in body["items"]]
        after = body["next"]
        if not body["items"]:
            return ids, after


def stored(writer: Writer, prefix: str, count: int, now: int, kind: str = "click") -> list[str]:
    rows = [
        # Every fifth stamped weeks before it is stored: late events, as a phone sends them offline.
        event(f"events/{kind}", {"event_id": f"{prefix}{i:03}", "timestamp": now - (i % 5 == 0) * 20 * DAY_MS - i}, now)
        for i in range(count)
    ]
    assert writer.insert_events(rows) == []
    return [row.event_id for row in rows]


def test_a_client_following_next_gets_each_event_once_and_can_poll_an_empty_page(
    clickhouse_dsn: str, writer: Writer
) -> None:
    now = time.time_ns() // 1_000_000
    client = app(clickhouse_dsn)
    first = stored(writer, "a", 250, now)
    ids, after = follow(client, None, limit=60)
    assert sorted(ids) == sorted(first)

    # Caught up: an empty page still hands a token, and events stored since come after it, late
    # ones and redelivered copies included, the copies not again.
    empty = page(client, after=after)
    assert empty["items"] == [] and empty["next"]
    later = stored(writer, "b", 30, now + 1000)
    writer.insert_events([event("events/click", {"event_id": "a001", "timestamp": now - 1}, now + 2000)])
    ids, _ = follow(client, empty["next"], limit=60)
    assert sorted(ids) == sorted(later)


def test_complete_until_is_rfc3339_and_never_past_what_is_served(clickhouse_dsn: str, writer: Writer) -> None:
    now = time.time_ns() // 1_000_000
    stored(writer, "c", 20, now)
    client = app(clickhouse_dsn)
    body = page(client, limit=5)
    # Mid-way through the first epoch nothing is complete yet; when it is served, up to when it began.
    assert body["complete_until"] == "1970-01-01T00:00:00.000Z"
    while body["items"]:
        body = page(client, limit=5, after=body["next"])
    served_until = body["complete_until"]
    assert served_until.endswith("Z") and served_until > "2026"


def test_a_token_survives_an_api_restart_with_the_same_secret_only(clickhouse_dsn: str, writer: Writer) -> None:
    now = time.time_ns() // 1_000_000
    ids = stored(writer, "d", 40, now)
    body = page(app(clickhouse_dsn), limit=15)
    rest, _ = follow(app(clickhouse_dsn), body["next"], limit=15)  # another process, the same secret
    assert sorted([item["event_id"] for item in body["items"]] + rest) == sorted(ids)

    refused = app(clickhouse_dsn, "another-cursor-secret-0123456789abcdef").get(
        "/feed", params={"after": body["next"]}, headers=AUTH
    )
    assert refused.status_code == 422 and "start again" in refused.json()["detail"]


def test_a_type_filtered_feed(clickhouse_dsn: str, writer: Writer) -> None:
    now = time.time_ns() // 1_000_000
    purchases = stored(writer, "p", 12, now, "purchase")
    stored(writer, "v", 30, now, "page_view")
    ids, after = follow(app(clickhouse_dsn), None, limit=5, event_type="purchase")
    assert sorted(ids) == sorted(purchases)
    # A token is bound to its filters.
    other = app(clickhouse_dsn).get("/feed", params={"after": after, "event_type": "page_view"}, headers=AUTH)
    assert other.status_code == 422 and "other filters" in other.json()["detail"]


def forged(body: bytes) -> str:
    return base64.urlsafe_b64encode(bytes(16) + body).decode().rstrip("=")


def three_events(dsn: str) -> str:
    client = connect(dsn)
    migrate(client)
    stored(Writer(client), "e", 3, time.time_ns() // 1_000_000)
    return dsn


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 10_001},
        {"limit": "many"},
        {"after": "garbage"},
        {"after": "A" * 5000},
        {"after": "%00"},
        {"after": forged(b"\x46" + bytes(50))},  # the right layout, no valid tag
        {"after": Cursors(SECRET).seal(b"\x46" + bytes(8))},  # signed, but too short to be a token
        {"since": "2026-01-01T00:00:00Z"},  # /events' time window has no meaning here
        {"cursor": "x"},
    ],
)
def test_bad_parameters_get_a_422_that_names_them(shared_stores: SharedStores, params: dict[str, Any]) -> None:
    response = app(shared_stores.get(three_events)).get("/feed", params=params, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_parameter"


def test_a_cursor_of_events_is_not_a_feed_token(clickhouse_dsn: str, writer: Writer) -> None:
    stored(writer, "f", 5, time.time_ns() // 1_000_000)
    client = app(clickhouse_dsn)
    cursor = client.get("/events", params={"limit": 2}, headers=AUTH).json()["next_cursor"]
    response = client.get("/feed", params={"after": cursor}, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"].startswith("after: ")


def test_the_feed_needs_a_key_and_is_documented(clickhouse_dsn: str, writer: Writer) -> None:
    client = app(clickhouse_dsn)
    assert client.get("/feed").status_code == 401
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/feed"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"after", "limit", "event_type", "where"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][answer]["examples"][0]["next"]
    # since/until say they filter on the event's own timestamp, wherever they are taken.
    for path in ("/events", "/stats/event-types", "/stats/timeseries"):
        for parameter in schema["paths"][path]["get"]["parameters"]:
            if parameter["name"] in ("since", "until"):
                assert "own timestamp" in parameter["description"], (path, parameter["description"])


def test_a_key_limited_to_types_follows_only_those(clickhouse_dsn: str, writer: Writer, tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    purchases = stored(writer, "q", 15, now, "purchase")
    stored(writer, "w", 25, now, "page_view")
    keys_file = tmp_path / "keys.json"
    scoped = {"name": "partner", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "event_types": ["purchase"]}
    keys_file.write_text(json.dumps({"keys": [scoped]}))
    made = create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), Keyring((), keys_file), SECRET)
    client = TestClient(made, raise_server_exceptions=False)
    ids, after = follow(client, None, limit=4)
    assert sorted(ids) == sorted(purchases)
    # Its token is bound to its types: a full-access key cannot continue it.
    other = app(clickhouse_dsn).get("/feed", params={"after": after}, headers=AUTH)
    assert other.status_code == 422
