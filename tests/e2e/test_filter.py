"""Publish shop events over MQTT to `eventpipe up`, then filter and break them down over HTTP as an analyst would,
checked against what was published."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventpipe.producer.demo import demo_event
from tests.support.api import walk
from tests.support.mqtt import publish_raw
from tests.support.stack import Up, ready
from tests.support.wait import wait_until

KEY = "e2e-filter-key-0123456789"
COUNT = 3000


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with ready(tmp_path / "data", {"EVENTPIPE_API_KEYS": KEY}) as stack:
        yield stack


def test_published_events_are_filtered_and_broken_down_as_published(up: Up) -> None:
    rng = random.Random(1515)
    bodies: list[dict[str, Any]] = [demo_event(rng)[1] for _ in range(COUNT)]
    messages = [(f"events/{body['event_type']}", json.dumps(body).encode()) for body in bodies]
    assert publish_raw(up.mqtt_url, messages) == COUNT
    api = httpx.Client(base_url=up.api_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    wait_until(lambda: api.get("/stats/event-types").json()["total"] == COUNT, timeout=60, what="every event stored")

    # The issue's own example.
    rich = sorted(
        body["event_id"]
        for body in bodies
        if body["event_type"] == "purchase" and body["amount"] >= 100 and body["country"] == "FR"
    )
    assert rich, "the seed gives some French purchases of 100 or more"
    where = ["properties.amount>=100", "properties.country=FR"]
    listed = walk(api, "/events", headers={}, event_type="purchase", where=where, limit=7)
    assert sorted(item["event_id"] for item in listed) == rich
    failed = sum(1 for body in bodies if body.get("success") is False)
    counts = api.get("/stats/event-types", params={"where": "properties.success=false"}).json()
    assert counts == {"items": [{"event_type": "login", "count": failed}], "total": failed, "types": 1}

    revenue: defaultdict[str, float] = defaultdict(float)
    for body in bodies:
        if body["event_type"] == "purchase":
            revenue[body["country"]] += body["amount"]
    answer = api.get(
        "/stats/breakdown",
        params={"by": "properties.country", "metric": "sum:properties.amount", "event_type": "purchase"},
    ).json()
    assert [item["key"] for item in answer["items"]] == sorted(revenue, key=lambda country: -revenue[country])
    assert [item["value"] for item in answer["items"]] == pytest.approx(sorted(revenue.values(), reverse=True))
    assert answer["total"] == pytest.approx(sum(revenue.values()))

    mobile = Counter(body["browser"] for body in bodies if body["device"] == "mobile")
    answer = api.get(
        "/stats/breakdown", params={"by": "properties.browser", "where": "properties.device=mobile", "limit": 2}
    ).json()
    assert answer["items"] == [
        {"key": key, "value": n} for key, n in sorted(mobile.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    ]
    assert answer["total"] == sum(mobile.values())
