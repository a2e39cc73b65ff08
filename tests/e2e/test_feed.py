"""A sync built on GET /feed against `eventpipe up`: published over MQTT, read over HTTP, each event once,
late ones and re-sent ones included, and complete_until is what it says."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mqtt import publish_raw
from tests.support.stack import Up, ready
from tests.support.wait import wait_until

KEY = "e2e-feed-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
DAY_MS = 86_400_000


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    env = {
        "EVENTPIPE_API_KEYS": KEY,
        "EVENTPIPE_CURSOR_SECRET": "e2e-feed-cursor-secret-0123456789abcdef",
        "EVENTPIPE_PROBE_INTERVAL_S": "1",
    }
    with ready(tmp_path / "data", env) as stack:
        yield stack


class Sync:
    """What a partner's sync does: keeps `next`, asks for more, stores what comes."""

    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, headers=AUTH, timeout=10)
        self.after: str | None = None
        self.copy: Counter[str] = Counter()
        self.complete_until = ""

    def poll(self) -> int:
        params: dict[str, Any] = {"limit": 500, **({"after": self.after} if self.after else {})}
        response = self.http.get("/feed", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        self.copy.update(item["event_id"] for item in page["items"])
        self.after, self.complete_until = page["next"], page["complete_until"]
        return len(page["items"])


def payloads(prefix: str, count: int, now_ms: int) -> list[tuple[str, bytes]]:
    events = []
    for i in range(count):
        body: dict[str, Any] = {"event_id": f"{prefix}{i}", "user_id": f"u{i % 7}", "n": i}
        if i % 10 == 0:
            body["timestamp"] = now_ms - 45 * DAY_MS  # published now, happened weeks ago
        elif i % 10 != 1:  # every tenth (ending in 1) has no timestamp: stamped on receipt
            body["timestamp"] = now_ms - i
        events.append((f"events/e2e{i % 3}", json.dumps(body).encode()))
    return events


def test_a_sync_on_the_feed_gets_every_published_event_once(up: Up) -> None:
    sync = Sync(up.api_url)
    now = time.time_ns() // 1_000_000
    first = payloads("a", 1200, now)
    # A producer retry re-sends some (same event_id; the worker sees no DUP flag).
    assert publish_raw(up.mqtt_url, first + first[:1200:40]) == 1200 + 30
    sent_at = time.time_ns() // 1_000_000

    def caught_up() -> bool:
        while sync.poll():
            pass
        return sync.complete_until > iso(sent_at + 3000)

    wait_until(caught_up, timeout=60, what="complete_until past the publish")
    assert set(sync.copy) == {f"a{i}" for i in range(1200)}
    assert max(sync.copy.values()) == 1

    # Later traffic, late events and re-sends of the first batch among it, while the sync keeps polling.
    later = payloads("b", 300, time.time_ns() // 1_000_000)
    assert publish_raw(up.mqtt_url, later + first[:100:10]) == 300 + 10
    sent_at = time.time_ns() // 1_000_000
    wait_until(caught_up, timeout=60, what="complete_until past the second publish")
    assert set(sync.copy) == {f"a{i}" for i in range(1200)} | {f"b{i}" for i in range(300)}
    assert max(sync.copy.values()) == 1


def iso(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_ms / 1000)) + f".{epoch_ms % 1000:03d}Z"
