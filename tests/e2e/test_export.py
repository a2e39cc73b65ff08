"""Publish over MQTT to `eventpipe up`, export everything over HTTP as NDJSON and CSV, and check it against what
was published, as a third party loading the events into its own tools would."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mqtt import publish_raw
from tests.support.stack import Up, ready, run_eventpipe
from tests.support.wait import wait_until

KEY = "e2e-export-key-0123456789"
DEMO = 2000
MINE = 900
# Values a CSV has to carry intact: separators, quotes, line breaks, text beyond ASCII.
AWKWARD = ["plain", "a,b", 'say "hi"', "two\nlines", "crlf\r\n", "é🙂"]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with ready(tmp_path / "data", {"EVENTPIPE_API_KEYS": KEY}) as stack:
        yield stack


def mine(now_ms: int) -> dict[str, dict[str, Any]]:
    """Events with ids and timestamps a minute apart and fields of every awkward kind, by id, as published."""
    events = {}
    for i in range(MINE):
        text = AWKWARD[i % len(AWKWARD)]
        body: dict[str, Any] = {
            "event_id": f"mine-{i:04d}-{text}",
            "timestamp": now_ms - (MINE - i) * 60_000,
            "note": text,
            "cart": {"items": [{"sku": i, "qty": i % 3}], "total": i / 4, "paid": i % 2 == 0},
        }
        if i % 5:
            body["user_id"] = f"user,{i % 4}" if i % 3 else text
        events[body["event_id"]] = body
    return events


def test_an_export_holds_every_published_event_once_oldest_first_in_both_formats(up: Up) -> None:
    now_ms = time.time_ns() // 1_000_000
    published = mine(now_ms)
    messages = [
        (f"events/order/{'paid' if body['cart']['paid'] else 'open'}", json.dumps(body).encode())
        for body in published.values()
    ]
    demo = run_eventpipe("publish", "--mqtt-url", up.mqtt_url, "--count", str(DEMO))
    assert demo.returncode == 0, demo.stderr
    assert publish_raw(up.mqtt_url, messages) == MINE
    assert publish_raw(up.mqtt_url, messages[:300]) == 300  # a producer re-sending after lost PUBACKs
    assert publish_raw(up.mqtt_url, [("events/order/paid", b'{"event_id": "broken", ')]) == 1  # a dead letter

    api = httpx.Client(base_url=up.api_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    total = DEMO + MINE
    wait_until(lambda: api.get("/stats/event-types").json()["total"] == total, timeout=60, what=f"{total} events")

    exported = [json.loads(line) for line in api.get("/export").content.splitlines()]
    assert len(exported) == total and len({item["event_id"] for item in exported}) == total
    assert [item["timestamp"] for item in exported] == sorted(item["timestamp"] for item in exported)
    ours = {item["event_id"]: item for item in exported if item["event_id"] in published}
    assert set(ours) == set(published)
    for event_id, body in published.items():
        item = ours[event_id]
        assert item["user_id"] == body.get("user_id")
        assert item["event_type"] == item["topic"].rsplit("/", 1)[1]
        assert item["properties"] == {"note": body["note"], "cart": body["cart"]}
    assert ours == {item["event_id"]: item for item in _walk(api) if item["event_id"] in published}

    response = api.get("/export", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    records = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [record["event_id"] for record in records] == [item["event_id"] for item in exported]
    for record, item in zip(records, exported, strict=True):
        assert json.loads(record["properties"]) == item["properties"]
        assert (record["user_id"] or None) == (item["user_id"] or None)
        assert [record[field] for field in ("event_type", "timestamp", "received_at", "topic")] == [
            item[field] for field in ("event_type", "timestamp", "received_at", "topic")
        ]

    # The filters of /events, here as a partner's nightly job would pass them.
    since, until = now_ms - 600 * 60_000, now_ms - 100 * 60_000
    params = {"event_type": "paid", "user_id": "user,2", "since": str(since), "until": str(until)}
    filtered = [json.loads(line)["event_id"] for line in api.get("/export", params=params).content.splitlines()]
    expected = [
        event_id
        for event_id, body in published.items()  # in time order
        if body["cart"]["paid"] and body.get("user_id") == "user,2" and since <= body["timestamp"] < until
    ]
    assert filtered == expected and len(expected) > 10
    assert api.head("/export", params={"format": "csv"}).status_code == 200


def _walk(api: httpx.Client) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        page = api.get("/events", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
        yield from page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return
