"""The query API over the real engine, read as a read-only user: auth, pages, filters, dedup, errors."""

from __future__ import annotations

import base64
import contextlib
import logging
import select
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.errors import HaltStorageError, RetryableStorageError
from eventpipe.store.client import connect
from eventpipe.store.writer import Writer
from tests.support.api import (
    AUTH,
    HOSTILE,
    INJECTIONS,
    KEY,
    admin_client,
    api_client,
    event,
    readonly_reader,
    rejection,
    scraped,
    served,
    walk,
)
from tests.support.faults import FailingReader

# 2026-03-01T00:00:00Z: the month boundary a redelivery crosses below.
MARCH_MS = 1_772_323_200_000
HOUR_MS = 3_600_000
KIB = 1024
TYPES = ("page_view", "click", "purchase")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def api(clickhouse_dsn: str, writer: Writer, registry: CollectorRegistry) -> TestClient:
    return api_client(clickhouse_dsn, keys=("another-key", KEY), registry=registry)


def seed(writer: Writer, count: int, start_ms: int = MARCH_MS) -> list[str]:
    """`count` events, three to a millisecond (so pages split ties), users u0..u9; return their ids."""
    rows = [
        event(
            f"events/{TYPES[i % 3]}",
            {"event_id": f"ev-{i:05d}", "timestamp": start_ms + i // 3, "user_id": f"u{i % 10}", "n": i},
            start_ms + i,
        )
        for i in range(count)
    ]
    assert writer.insert_events(rows) == []
    return [row.event_id for row in rows]


def test_every_data_endpoint_needs_a_valid_key_and_health_stays_open(api: TestClient) -> None:
    for path in ("/events", "/events/x", "/stats/event-types", "/stats/timeseries", "/dead-letters"):
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": KEY},
        ):
            response = api.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        assert api.get(path, headers={"Authorization": "Bearer another-key"}).status_code in (200, 404)
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert api.get(path).status_code == 200, path


def test_the_api_port_serves_no_metrics_to_any_key(api: TestClient, registry: CollectorRegistry) -> None:
    # They name every key and count its requests by status, and hold the dead-letter backlog that
    # /dead-letters refuses a scoped key: any partner read the others' (found by an attack). The command
    # serves them on its metrics listener instead (tests/e2e/test_up.py, tests/e2e/test_redaction.py).
    api.get("/events", headers=AUTH)
    for headers in ({}, AUTH):
        refused = api.get("/metrics", headers=headers)
        assert refused.status_code == 404, refused.text
        assert "eventpipe_" not in refused.text
    assert 'eventpipe_api_key_requests_total{code="200",key="env#2"} 1.0' in scraped(registry)


def test_pages_walk_every_event_once_newest_first(api: TestClient, writer: Writer) -> None:
    ids = seed(writer, 2345)
    for limit in (1000, 97):
        items = list(walk(api, "/events", limit=limit))
        assert sorted(item["event_id"] for item in items) == sorted(ids)
        # Newest first; in one millisecond by type, then id, as the tables sort them.
        keys = [(item["timestamp"], item["event_type"], item["event_id"]) for item in items]
        assert keys == sorted(keys, reverse=True)
    newest = api.get("/events", params={"limit": 1}, headers=AUTH).json()["items"][0]
    assert newest == {
        "event_id": "ev-02343",
        "event_type": "page_view",
        "timestamp": "2026-03-01T00:00:00.781Z",
        "received_at": "2026-03-01T00:00:02.343Z",
        "user_id": "u3",
        "topic": "events/page_view",
        "properties": {"n": 2343},
    }


def test_an_id_reused_under_three_types_at_one_time_is_three_items_at_any_page_size(
    api: TestClient, writer: Writer
) -> None:
    # They tie on time and id; the cursor carries the type that breaks the tie.
    body = {"event_id": "dup-1", "timestamp": MARCH_MS, "user_id": "u-dup"}
    writer.insert_events([event(f"events/{kind}", body, MARCH_MS + 5) for kind in ("dupa", "dupb", "dupc")])
    for params in ({}, {"user_id": "u-dup"}, {"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T00:00:01Z"}):
        for limit in (1, 2, 10):
            items = list(walk(api, "/events", limit=limit, **params))
            assert [item["event_type"] for item in items] == ["dupc", "dupb", "dupa"], (params, limit)


def test_each_event_of_an_id_reused_under_two_types_is_found_by_id_with_its_type(
    api: TestClient, writer: Writer
) -> None:
    # Two events (README): the older one, of another type, was unreachable by id.
    writer.insert_events(
        [
            event("events/order", {"event_id": "two-1", "timestamp": MARCH_MS + HOUR_MS, "n": 1}, MARCH_MS),
            event("events/refund", {"event_id": "two-1", "timestamp": MARCH_MS, "n": 2}, MARCH_MS),
            event("events/_probe", {"event_id": "two-1", "timestamp": MARCH_MS}, MARCH_MS),
        ]
    )
    assert api.get("/events/two-1", headers=AUTH).json()["event_type"] == "order", "the newest, as before"
    for kind, n in (("order", 1), ("refund", 2)):
        got = api.get("/events/two-1", params={"event_type": kind}, headers=AUTH)
        assert got.status_code == 200 and got.json()["properties"] == {"n": n}, kind
    for kind in ("click", "_probe"):
        missing = api.get("/events/two-1", params={"event_type": kind}, headers=AUTH)
        assert missing.status_code == 404 and missing.json()["detail"] == "no event has this id and type", kind
    assert api.get("/events/two-1", params={"type": "refund"}, headers=AUTH).status_code == 422


def test_redelivered_copies_show_once_before_any_merge(api: TestClient, writer: Writer) -> None:
    ids = seed(writer, 300)
    seed(writer, 300)  # the same batch again, as after a crash before the ack: a second part, unmerged
    # An event without id or timestamp, received before midnight and redelivered after it: the
    # copies share the derived id but sit in two monthly partitions, which merges never join.
    body = {"event_type": "click", "user_id": "u1", "cart": {"items": 2}}
    first, again = event("events/click", body, MARCH_MS - 1), event("events/click", body, MARCH_MS + 5)
    assert first.event_id == again.event_id and first.timestamp_ms != again.timestamp_ms
    writer.insert_events([first])
    writer.insert_events([again])

    listed = [item["event_id"] for item in walk(api, "/events", limit=50)]
    assert sorted(listed) == sorted([*ids, first.event_id])
    # The first copy is the event: it stays before midnight, where it was first seen.
    before = list(walk(api, "/events", since=MARCH_MS - HOUR_MS, until=MARCH_MS))
    assert [item["timestamp"] for item in before] == ["2026-02-28T23:59:59.999Z"]
    stats = api.get("/stats/event-types", headers=AUTH).json()
    assert stats == {
        "items": [
            {"event_type": "click", "count": 101},
            {"event_type": "page_view", "count": 100},
            {"event_type": "purchase", "count": 100},
        ],
        "total": 301,
        "types": 3,
    }
    series = api.get(
        "/stats/timeseries", params={"interval": "1d", "since": "2026-02-28", "until": "2026-03-02"}, headers=AUTH
    ).json()
    assert [bucket["count"] for bucket in series["items"]] == [1, 300]
    assert api.get(f"/events/{first.event_id}", headers=AUTH).json()["properties"] == {"cart": {"items": 2}}


def test_a_redelivery_during_a_walk_neither_moves_nor_repeats_an_event(api: TestClient, writer: Writer) -> None:
    ids = seed(writer, 300)
    # No id, no timestamp: the event is stamped with its receive time, in the middle of the walk.
    body = {"event_type": "click", "user_id": "u1"}
    first = event("events/click", body, MARCH_MS + 50)
    writer.insert_events([first])
    page = api.get("/events", params={"limit": 100}, headers=AUTH).json()
    # A worker restarted without its ack: the broker redelivers, later than everything stored.
    again = event("events/click", body, MARCH_MS + 10 * HOUR_MS)
    assert again.event_id == first.event_id
    writer.insert_events([again])
    rest = list(walk(api, "/events", limit=100, cursor=page["next_cursor"]))
    seen = [item["event_id"] for item in page["items"] + rest]
    assert sorted(seen) == sorted([*ids, first.event_id])
    assert api.get(f"/events/{first.event_id}", headers=AUTH).json()["timestamp"] == "2026-03-01T00:00:00.050Z"


def test_filters_select_and_a_cursor_only_continues_its_own_query(api: TestClient, writer: Writer) -> None:
    seed(writer, 600)
    clicks = list(walk(api, "/events", event_type="click", limit=33))
    assert len(clicks) == 200 and {item["event_type"] for item in clicks} == {"click"}
    user = list(walk(api, "/events", user_id="u3", event_type="", limit=7))  # empty filter = no filter
    assert len(user) == 60 and {item["user_id"] for item in user} == {"u3"}
    # since inclusive, until exclusive; epoch ms, epoch seconds and RFC 3339 name the same instants.
    # A bound between two milliseconds keeps those rules: .0095 lets in .010 and not .009, and .0195
    # lets in .019 (both were read as the millisecond before).
    for since, until in (
        (MARCH_MS + 10, MARCH_MS + 20),
        ("1772323200.010", "2026-03-01T00:00:00.020Z"),
        ("2026-03-01T00:00:00.0095Z", "2026-03-01T00:00:00.019001Z"),
        ("1772323200.0095", "1772323200.0195"),
        ("1772323200009.5", "1772323200019000001"),
    ):
        window = list(walk(api, "/events", since=since, until=until))
        assert len(window) == 30, (since, until)
        assert min(item["timestamp"] for item in window) == "2026-03-01T00:00:00.010Z"
        assert max(item["timestamp"] for item in window) == "2026-03-01T00:00:00.019Z"
        totals = api.get("/stats/event-types", params={"since": since, "until": until}, headers=AUTH).json()
        assert totals["total"] == 30, (since, until)

    page = api.get("/events", params={"event_type": "click", "limit": 5}, headers=AUTH).json()
    other = api.get("/events", params={"event_type": "login", "cursor": page["next_cursor"]}, headers=AUTH)
    assert other.status_code == 422
    assert "other filters" in other.json()["detail"]


def test_one_event_by_id_with_nested_fields_and_probes_never_served(api: TestClient, writer: Writer) -> None:
    nested = event(
        "events/signup",
        {"event_data": {"event_id": "nested-1", "user_id": "u9", "plan": {"name": "pro", "seats": [1, 2]}}},
        MARCH_MS,
    )
    probe = event("events/_probe", {"event_id": "probe-1"}, MARCH_MS)
    writer.insert_events([nested, probe])
    got = api.get("/events/nested-1", headers=AUTH)
    assert got.status_code == 200
    assert got.json()["event_type"] == "signup" and got.json()["user_id"] == "u9"
    # The envelope is kept as sent: nothing of the producer's payload is dropped or reshaped.
    assert got.json()["properties"]["event_data"]["plan"] == {"name": "pro", "seats": [1, 2]}
    missing = api.get("/events/probe-1", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert [item["event_id"] for item in walk(api, "/events")] == ["nested-1"]
    assert api.get("/stats/event-types", headers=AUTH).json()["total"] == 1


def test_timeseries_has_every_bucket_of_the_window(api: TestClient, writer: Writer) -> None:
    writer.insert_events(
        [
            event("events/click", {"event_id": f"t{i}", "timestamp": MARCH_MS + i * HOUR_MS // 2}, MARCH_MS)
            for i in range(6)
        ]
    )
    series = api.get(
        "/stats/timeseries",
        params={"interval": "1h", "since": MARCH_MS - HOUR_MS, "until": MARCH_MS + 4 * HOUR_MS},
        headers=AUTH,
    ).json()
    assert series["interval"] == "1h"
    assert [(bucket["start"][11:16], bucket["count"]) for bucket in series["items"]] == [
        ("23:00", 0),
        ("00:00", 2),
        ("01:00", 2),
        ("02:00", 2),
        ("03:00", 0),
    ]
    writer.insert_events([event("events/view", {"event_id": "v1", "timestamp": MARCH_MS}, MARCH_MS)])
    day = {"interval": "1d", "since": "2026-03-01", "until": "2026-03-02"}
    assert api.get("/stats/timeseries", params=day, headers=AUTH).json()["items"][0]["count"] == 7
    only = api.get("/stats/timeseries", params={**day, "event_type": "view"}, headers=AUTH).json()
    assert [(bucket["start"], bucket["count"]) for bucket in only["items"]] == [("2026-03-01T00:00:00.000Z", 1)]
    too_many = api.get("/stats/timeseries", params={"interval": "1m", "since": "2020-01-01"}, headers=AUTH)
    assert too_many.status_code == 422 and "buckets" in too_many.json()["detail"]


def test_the_timeseries_default_window_is_a_day_moved_back_to_a_bucket_start_as_documented(api: TestClient) -> None:
    for interval, step_ms in (("1h", HOUR_MS), ("1d", 24 * HOUR_MS)):
        series = api.get("/stats/timeseries", params={"interval": interval}, headers=AUTH).json()
        until_ms = int(datetime.fromisoformat(series["until"]).timestamp() * 1000)
        since_ms = (until_ms - 24 * HOUR_MS) // step_ms * step_ms
        assert series["since"] == datetime.fromtimestamp(since_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert series["items"][0]["start"] == series["since"]
    described = api.get("/openapi.json").json()["paths"]["/stats/timeseries"]["get"]["parameters"]
    since = next(parameter for parameter in described if parameter["name"] == "since")
    assert "moved back to the start of its bucket" in since["description"]


def test_dead_letters_show_what_was_refused_byte_for_byte(api: TestClient, writer: Writer) -> None:
    payloads = [b"{not json", b"\xff\xfe binary", b"[1, 2]", b'{"event_type": 5}'] + [
        b"{" * 3 + bytes([i]) for i in range(6)
    ]
    writer.insert_dead_letters([rejection("events/bad", p, MARCH_MS + i) for i, p in enumerate(payloads)])
    items = list(walk(api, "/dead-letters", limit=3))
    assert len(items) == len(payloads)
    assert [item["received_at"] for item in items] == sorted((item["received_at"] for item in items), reverse=True)
    got = {
        base64.b64decode(item["payload"]) if item["payload_encoding"] == "base64" else item["payload"].encode()
        for item in items
    }
    assert got == set(payloads)
    binary = next(item for item in items if item["payload_encoding"] == "base64")
    assert binary["reason"] == "invalid_utf8" and binary["payload_size"] == len(b"\xff\xfe binary")
    only = list(walk(api, "/dead-letters", reason="not_an_object"))
    assert [item["payload"] for item in only] == ["[1, 2]"]
    assert len(list(walk(api, "/dead-letters", reason=""))) == len(payloads), "empty: no filter"
    # A misspelt reason answered an empty page, as if there were no such letters.
    misspelt = api.get("/dead-letters", params={"reason": "not_an_objct"}, headers=AUTH)
    assert misspelt.status_code == 422, misspelt.text
    assert misspelt.json()["detail"].startswith("reason: not a dead-letter reason; one of oversize, "), misspelt.text


def test_hostile_requests_get_4xx_with_a_reason_and_never_touch_the_data(api: TestClient, writer: Writer) -> None:
    ids = seed(writer, 50)
    for path in HOSTILE:
        response = api.get(path, headers=AUTH)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        body = response.json()
        assert body["error"] and body["detail"], path
        assert len(response.content) < 2000, f"{path} echoed too much back"
    for path in INJECTIONS:
        response = api.get(path, headers=AUTH)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["items"] == []
    assert sorted(item["event_id"] for item in walk(api, "/events", limit=1000)) == sorted(ids)


@pytest.mark.parametrize("parameter", ["since", "until"])
@pytest.mark.parametrize("value", ["Z" * 64, "9" * 64, "Wed, 07 Zzz 2025 08:25:14 GMT" + "Z" * 34])
def test_a_refused_time_is_echoed_60_characters_at_most(api: TestClient, parameter: str, value: str) -> None:
    # As every refused value (README, "HTTP API"): the timestamp parser quoted all 64 it takes.
    response = api.get(f"/events?{parameter}={quote(value)}", headers=AUTH)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert value[:60] + "…" in detail and value[:61] not in detail, detail


def test_openapi_documents_every_route_with_examples(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    assert set(document["paths"]) >= {
        "/events",
        "/events/{event_id}",
        "/stats/event-types",
        "/stats/timeseries",
        "/dead-letters",
        "/healthz",
    }
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert document["components"]["schemas"]["Event"]["examples"]
    assert "401" in document["paths"]["/events"]["get"]["responses"]
    assert document["paths"]["/events"]["get"]["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_openapi_lists_the_refusals_every_keyed_route_can_answer(clickhouse_dsn: str) -> None:
    # A client generated from the document met a 413 no route listed (any body over 128 KiB gets it, a GET's
    # too), a 400 described as a body that is not JSON (that is a 422), and an erasure's user id that could
    # only be a string (integers are taken, as events carry them).
    api = admin_client(clickhouse_dsn)
    document = api.get("/openapi.json").json()
    keyed = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if operation.get("security")
    ]
    assert len(keyed) >= 11
    for path, method, operation in keyed:
        assert "413" in operation["responses"], f"{method.upper()} {path}"
    described = [op["responses"]["400"]["description"] for _, _, op in keyed if "400" in op["responses"]]
    assert described and all("422" in text for text in described), described
    user_id = document["components"]["schemas"]["EraseRequest"]["properties"]["user_id"]
    assert "integer" in [branch["type"] for branch in user_id["anyOf"]], user_id
    too_large = api.request("GET", "/events", headers=AUTH, content=b"x" * (129 * 1024))
    assert too_large.status_code == 413, too_large.text


def test_ids_with_slashes_are_served_and_a_trailing_slash_is_not_another_event(api: TestClient, writer: Writer) -> None:
    writer.insert_events(
        [
            event("events/a", {"event_id": eid, "timestamp": MARCH_MS}, MARCH_MS)
            for eid in ("a/b", "tenant/7/42", "x", ".", "a/../b")
        ]
    )
    # Dot segments percent-encoded as README says: clients resolve them before sending otherwise.
    encoded = [("a/b", "/events/a%2Fb"), (".", "/events/%2E"), ("a/../b", "/events/" + quote("a/../b", safe=""))]
    for eid, path in (*encoded, ("tenant/7/42", "/events/tenant/7/42")):
        got = api.get(path, headers=AUTH, follow_redirects=False)
        assert got.status_code == 200 and got.json()["event_id"] == eid, path
    trailing = api.get("/events/x/", headers=AUTH, follow_redirects=False)
    assert trailing.status_code == 404


def test_ids_with_line_breaks_are_each_their_own_event(api: TestClient, writer: Writer) -> None:
    # Starlette's `path` parameter is `.*` before `$`: `.` matches no line break and `$` also matches
    # before a final one, so /events/nl%0A answered the event `nl`, and an id with one inside was 404.
    ids = ("nl", "nl\n", "a\nb", "cr\r\n")
    writer.insert_events(
        [event("events/a", {"event_id": eid, "timestamp": MARCH_MS, "n": n}, MARCH_MS) for n, eid in enumerate(ids)]
    )
    for n, eid in enumerate(ids):
        got = api.get("/events/" + quote(eid, safe=""), headers=AUTH)
        assert (got.status_code, got.json()["event_id"], got.json()["properties"]["n"]) == (200, eid, n), eid
    assert api.get("/events/none%0A", headers=AUTH).status_code == 404


def test_a_page_of_big_events_ends_early_and_its_cursor_goes_on(api: TestClient, writer: Writer) -> None:
    filler = "x" * (50 * KIB)
    writer.insert_events(
        [
            event("events/big", {"event_id": f"b{i:03d}", "timestamp": MARCH_MS + i, "blob": filler}, MARCH_MS)
            for i in range(200)
        ]
    )
    first = api.get("/events", params={"limit": 1000}, headers=AUTH)
    assert len(first.content) <= 8 * 1024 * KIB + 64 * KIB
    assert 100 < len(first.json()["items"]) < 200 and first.json()["next_cursor"]
    assert sorted(item["event_id"] for item in walk(api, "/events", limit=1000)) == [f"b{i:03d}" for i in range(200)]


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        (RetryableStorageError, 503, "unavailable"),
        (HaltStorageError, 500, "storage_error"),
        (KeyError, 500, "internal_error"),
    ],
)
def test_server_failures_answer_in_the_same_shape(
    clickhouse_dsn: str, failure: type[Exception], status: int, error: str
) -> None:
    reader = FailingReader(connect(clickhouse_dsn))
    client = TestClient(create_app(reader, CollectorRegistry(), [KEY]), raise_server_exceptions=False)
    reader.failure = failure
    for path in ("/events", "/events/x", "/stats/event-types", "/stats/timeseries", "/dead-letters"):
        response = client.get(path, headers=AUTH)
        assert (response.status_code, response.json()["error"]) == (status, error), path
        assert "injected" not in response.text, "internals stay in the log"
    assert client.get("/events", headers=AUTH).headers.get("retry-after") == ("5" if status == 503 else None)
    assert client.get("/healthz").status_code == 200


def test_times_are_rfc3339_utc_milliseconds(api: TestClient, writer: Writer) -> None:
    seed(writer, 1)
    item = api.get("/events", headers=AUTH).json()["items"][0]
    assert datetime.fromisoformat(item["timestamp"]) == datetime(2026, 3, 1, tzinfo=UTC)
    assert item["timestamp"].endswith(".000Z")


def test_ids_of_the_longest_kind_page_on(api: TestClient, writer: Writer) -> None:
    # 128 four-byte characters, or control characters: JSON escapes made such a cursor too long to send back.
    ids = [f"{i:02d}" + char * 126 for i, char in enumerate(("💩", "\x01", "é", "💩", "\x01"))]
    writer.insert_events([event("events/long", {"event_id": eid, "timestamp": MARCH_MS}, MARCH_MS) for eid in ids])
    assert sorted(item["event_id"] for item in walk(api, "/events", limit=1)) == sorted(ids)


def test_a_cursor_continues_on_any_replica_with_the_same_secret_only(clickhouse_dsn: str, writer: Writer) -> None:
    ids = seed(writer, 10)
    shared = "replicas-share-this-cursor-secret-0123456789"
    first, second, stranger = (
        TestClient(create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), [KEY], key))
        for key in (shared, shared, "another-deployment-cursor-secret-0123456789")
    )
    page = first.get("/events", params={"limit": 4}, headers=AUTH).json()
    rest = list(walk(second, "/events", limit=4, cursor=page["next_cursor"]))
    assert sorted(item["event_id"] for item in page["items"] + rest) == sorted(ids)
    refused = stranger.get("/events", params={"limit": 4, "cursor": page["next_cursor"]}, headers=AUTH)
    assert refused.status_code == 422 and refused.json() == {
        "error": "invalid_parameter",
        "detail": "cursor: it is not one this API issued, or the API's cursor key changed since; "
        "start again from the first page",
    }


def test_every_integer_of_a_query_is_decimal_digits_as_the_openapi_document_says(api: TestClient) -> None:
    # 1_0 was 10, and 1.0, " 1" and +1 were 1: two spellings of one value, which a cache or a log keeps apart.
    required = {"/stats/breakdown": "by=properties.browser&"}  # what a route needs besides the integer
    integers = [
        (path, parameter)
        for path, operations in api.get("/openapi.json").json()["paths"].items()
        for parameter in operations.get("get", {}).get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("type") == "integer"
    ]
    assert {path for path, _ in integers} >= {"/events", "/feed", "/stats/event-types", "/stats/breakdown"}, integers
    for path, parameter in integers:
        name, schema = parameter["name"], parameter["schema"]
        # The bounds under the names JSON Schema gives them: a check placed before Query renamed them `ge`, `le`.
        assert {"minimum", "maximum"} <= schema.keys(), (path, schema)
        base = f"{path}?{required.get(path, '')}{name}="
        assert api.get(base + "010", headers=AUTH).status_code == 200, path
        for spelling in ("1_0", "1.0", "%201", "1%20", "%2B1", "%EF%BC%91", ""):  # the last but one: a full-width 1
            refused = api.get(base + spelling, headers=AUTH)
            assert refused.status_code == 422, (path, spelling, refused.text)
            assert refused.json()["detail"].startswith(f"{name}: Input should be a whole number"), refused.text


GET_ROUTES = [
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
    "/events",
    "/events/ev-00001",
    "/stats/event-types",
    "/stats/timeseries",
    "/dead-letters",
]


def test_head_answers_every_get_route_as_get_does_without_a_body(api: TestClient, writer: Writer) -> None:
    seed(writer, 3)
    for path in GET_ROUTES:
        got, head = api.get(path, headers=AUTH), api.head(path, headers=AUTH)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if path != "/stats/timeseries":  # its body changes between two requests
            assert head.headers["content-length"] == got.headers["content-length"], path
    # The same checks as GET: a key, known parameters, known paths.
    assert api.head("/events").status_code == 401
    assert api.head("/events", params={"limit": 0}, headers=AUTH).status_code == 422
    assert api.head("/events/nope", headers=AUTH).status_code == 404
    assert api.head("/nope").status_code == 404
    refused = api.post("/healthz")
    assert refused.status_code == 405
    # What the route takes, HEAD included: the Allow header said GET alone.
    assert {method.strip() for method in refused.headers["allow"].split(",")} == {"GET", "HEAD"}
    assert {m.strip() for m in api.options("/events", headers=AUTH).headers["allow"].split(",")} == {"GET", "HEAD"}
    # The document still lists one operation per route.
    assert {method for item in api.get("/openapi.json").json()["paths"].values() for method in item} == {"get"}


@pytest.fixture
def port(clickhouse_dsn: str) -> Iterator[int]:
    """The port of the app behind a real uvicorn server: what a client's socket meets."""
    with served(readonly_reader(clickhouse_dsn)) as server:
        yield int(urlsplit(server.url).port or 0)


def exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a new connection and read until the server closes it; b"" if it did before all was sent."""
    answer = b""
    # The server may close before all is sent.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection, contextlib.suppress(OSError):
        connection.sendall(request)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_head_sends_no_body_on_the_wire(port: int, writer: Writer) -> None:
    for path in ("/healthz", "/events"):
        request = f"HEAD {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
        answer = exchange(port, request.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer
        assert b"content-length: " in head.lower() and body == b"", answer


def test_a_request_with_oversized_headers_is_refused_before_the_app(port: int) -> None:
    # A 1 MiB header, before any key is asked for: the server must stop buffering what a
    # client sends (h11 stops once it holds 16 KiB without a complete request head; uvicorn's httptools
    # protocol holds it all and answers 200).
    pad = b"a" * 1024 * 1024
    answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\nConnection: close\r\n\r\n")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    healthy = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert healthy.startswith(b"HTTP/1.1 200"), healthy[:200]


def test_a_head_that_never_ends_is_cut_off_at_the_bound(port: int) -> None:
    # A header trickled in 1 KiB writes and never ended, as a client holding memory would send it:
    # the server refuses and closes once the head passes 16 KiB, not when the client stops. After each
    # write the client waits up to 20 ms for an answer: 64 KiB leave a loaded server a second.
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        with contextlib.suppress(OSError):
            while sent < 256 * KIB and not answer:
                connection.sendall(b"a" * KIB)
                sent += KIB
                if select.select([connection], [], [], 0.02)[0]:
                    answer = connection.recv(65536)
        with contextlib.suppress(OSError):
            while chunk := connection.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert sent <= 64 * KIB, sent


def test_heads_are_bounded_one_request_at_a_time(port: int) -> None:
    # 40 requests with 1 KiB headers on one connection, in one write: 40 KiB of heads in all, each
    # within the bound, so each is answered.
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * KIB + b"\r\n\r\n"
    answer = exchange(port, one * 39 + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert answer.count(b"HTTP/1.1 200") == 40, answer.count(b"HTTP/1.1 ")
    # A 1 MiB body after a small head is no head: the server reads all of it to reach the request
    # after it on the same connection, and answers both.
    body = b"{" + b" " * 1024 * KIB + b"}"
    post = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    post += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    answer = exchange(port, post + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405"), answer[:200]
    assert answer.count(b"HTTP/1.1 200") == 1, answer[:400]


def test_every_route_has_its_request_series_at_zero_before_any_request(clickhouse_dsn: str) -> None:
    # rate() cannot see the first increment of a series born at 1: a route's first 500s would go
    # unnoticed. FastAPI 0.165 keeps included routers whole in app.routes, and only /healthz,
    # /readyz and the docs were primed.
    registry = CollectorRegistry()
    app = create_app(readonly_reader(clickhouse_dsn), registry, [KEY])
    documented = {
        (path, method.upper()) for path, operations in app.openapi()["paths"].items() for method in operations
    }
    for template, method in documented:
        for code in ("200", "500", "503"):
            labels = {"route": template, "method": method, "code": code}
            assert registry.get_sample_value("eventpipe_http_requests_total", labels) == 0, labels
        timed = {"route": template, "method": method}
        assert registry.get_sample_value("eventpipe_http_request_duration_seconds_count", timed) == 0, timed
    assert ("/events/{event_id}", "GET") in documented and ("/feed", "GET") in documented


def test_head_is_counted_as_head_of_its_route(api: TestClient, registry: CollectorRegistry) -> None:
    api.head("/healthz")
    api.head("/events")
    text = scraped(registry)
    assert 'eventpipe_http_requests_total{code="200",method="HEAD",route="/healthz"} 1.0' in text
    assert 'eventpipe_http_requests_total{code="401",method="HEAD",route="/events"} 1.0' in text


def test_a_read_past_the_time_bound_is_stopped_and_answered_422_too_costly(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from eventpipe.bench.fill import fill
    from tests.support.api import readonly_reader

    fill(clickhouse_dsn, 300_000)
    app = create_app(readonly_reader(clickhouse_dsn, timeout_s=0.05), CollectorRegistry(), [KEY])
    api = TestClient(app, raise_server_exceptions=False)
    # A filter that selects nothing, with no time window, reads every stored event to fill its page,
    # parsing each path of properties: 14 s at 2M events in an attack, with every other request of
    # `eventpipe up` waiting behind it.
    where = [f"properties.p{i}.a.b.c!=x" for i in range(12)] + ["properties.country=ZZ"]
    started = time.monotonic()
    costly = api.get("/events", params={"where": where}, headers=AUTH)
    assert costly.status_code == 422, costly.text
    assert costly.json()["error"] == "too_costly" and "since and until" in costly.json()["detail"]
    assert time.monotonic() - started < 5
    # Any key can ask again at will: one log line a minute, with the count, not one a request.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="eventpipe"):
        for _ in range(3):
            assert api.get("/events", params={"where": where}, headers=AUTH).status_code == 422
    assert [record.getMessage() for record in caplog.records if "past" in record.getMessage()] == []
