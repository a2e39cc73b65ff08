"""Publish over MQTT to `eventpipe up`, read everything back through its HTTP API, as a third party would."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventpipe.events import Event, Limits, parse
from tests.support.api import HOSTILE, INJECTIONS, walk
from tests.support.mqtt import publish_raw
from tests.support.stack import Up, ready, run_eventpipe
from tests.support.wait import wait_until

KEY = "e2e-key-0123456789"
DEMO = 2500
# (topic, payload, reason) a careless producer sends between good events.
MALFORMED = [
    ("events/click", b'{"event_id": "x", "user_id": ', "invalid_json"),
    ("events/click", b"\xc3\x28 not utf-8", "invalid_utf8"),
    ("events/click", b'["an", "array"]', "not_an_object"),
    ("events/click", b'{"timestamp": "last tuesday"}', "invalid_timestamp"),
    ("events/click", b"NaN", "invalid_json"),
]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with ready(tmp_path / "data", {"EVENTPIPE_API_KEYS": f"other-key-0123456789,{KEY}"}) as stack:
        yield stack


def our_events() -> list[tuple[str, bytes]]:
    """Events a user's own producer sends: fields nested in `event_data`, the type only in the topic,
    some without id or timestamp (so the pipe derives the id), each malformed message among them."""
    now_ms = time.time_ns() // 1_000_000
    messages: list[tuple[str, bytes]] = []
    for i in range(600):
        inner: dict[str, Any] = {"user_id": f"user-{i % 40}", "cart": {"items": [{"sku": i, "qty": 1}], "total": i}}
        if i % 3:
            inner |= {"event_id": f"nested-{i}", "timestamp": now_ms - i}
        messages.append((f"events/checkout/step{i % 3}", json.dumps({"event_data": inner, "source": "shop"}).encode()))
        if i % 120 == 0:
            topic, payload, _reason = MALFORMED[i // 120]
            messages.append((topic, payload))
    return messages


def walk_all(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    return list(walk(client, path, headers={}, **params))  # the client sends its own key


def test_published_events_come_back_through_the_api_once_each(up: Up) -> None:
    mine = our_events()
    expected_ids, now_ms = set(), time.time_ns() // 1_000_000
    for topic, payload in mine:
        parsed = parse(topic, payload, now_ms, Limits())
        if isinstance(parsed, Event):
            expected_ids.add(parsed.event_id)  # derived ids do not depend on the receive time
    assert len(expected_ids) == 600

    demo = run_eventpipe("publish", "--mqtt-url", up.mqtt_url, "--count", str(DEMO))
    assert demo.returncode == 0, demo.stderr
    assert publish_raw(up.mqtt_url, mine) == len(mine)
    # The same messages again, as a producer retrying after a lost PUBACK would send them.
    assert publish_raw(up.mqtt_url, mine[:200]) == 200

    api = httpx.Client(base_url=up.api_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    total = DEMO + 600

    def stored() -> bool:
        return bool(api.get("/stats/event-types").json()["total"] == total)

    wait_until(stored, timeout=60, what=f"{total} events counted by the API")

    for limit in (1000, 333):
        items = walk_all(api, "/events", limit=limit)
        ids = [item["event_id"] for item in items]
        assert len(ids) == total and len(set(ids)) == total, f"limit {limit}: duplicates or gaps"
        assert expected_ids <= set(ids)
    stats = {row["event_type"]: row["count"] for row in api.get("/stats/event-types").json()["items"]}
    assert stats["step0"] + stats["step1"] + stats["step2"] == 600
    assert sum(stats.values()) == total
    listed = Counter(item["event_type"] for item in walk_all(api, "/events", limit=1000))
    assert listed == stats

    one = api.get("/events/nested-1").json()
    assert one["user_id"] == "user-1" and one["event_type"] == "step1" and one["topic"] == "events/checkout/step1"
    sent = next(json.loads(payload) for _topic, payload in mine if b'"nested-1"' in payload)
    assert one["properties"] == sent  # the payload as sent, envelope and nesting kept
    assert len(walk_all(api, "/events", user_id="user-7", event_type="step1")) == 5

    dead = walk_all(api, "/dead-letters", limit=2)
    assert sorted(item["reason"] for item in dead) == sorted(reason for _t, _p, reason in MALFORMED)
    day = api.get("/stats/timeseries", params={"interval": "1h"}).json()
    assert sum(bucket["count"] for bucket in day["items"]) == total


def test_hostile_and_unauthenticated_requests_get_4xx_never_5xx(up: Up) -> None:
    api = httpx.Client(base_url=up.api_url, timeout=30)
    assert api.get("/events").status_code == 401
    assert api.get("/events", headers={"Authorization": "Bearer not-the-key"}).status_code == 401
    assert api.get("/events", headers={"Authorization": "Bearer other-key-0123456789"}).status_code == 200
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in HOSTILE:
        response = api.get(urllib.parse.quote(path, safe="/?=&%"), headers=auth)
        assert 400 <= response.status_code < 500, (path[:80], response.status_code, response.text[:200])
        assert response.json()["detail"]
    for path in INJECTIONS:
        response = api.get(urllib.parse.quote(path, safe="/?=&%"), headers=auth)
        assert response.status_code == 200, (path, response.text[:200])
    assert up.get("/readyz")[0] == 200
