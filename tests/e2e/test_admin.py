"""An operator of `eventpipe up` replays dead letters after relaxing a setting, then erases a user, over MQTT
and HTTP with the key `up` generates for them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import walk
from tests.support.mqtt import publish_raw
from tests.support.stack import Up, count_rows
from tests.support.wait import wait_until

DAY_MS = 86_400_000
ALICE, BOB = "alice", "bob"


def start(stacks: list[Up], data: Path, env: dict[str, str] | None = None) -> tuple[Up, httpx.Client]:
    up = Up(data, env=env, prometheus=False)
    stacks.append(up)
    up.wait_ready()
    key = up.generated_key
    return up, httpx.Client(base_url=up.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def messages(now_ms: int) -> list[tuple[str, bytes]]:
    """Recent events of both users, and events three years old (over the default past bound) of both."""
    out = []
    for i in range(60):
        user = ALICE if i % 2 else BOB
        body: dict[str, Any] = {"event_id": f"now-{i}", "user_id": user, "timestamp": now_ms - i * 1000}
        out.append((f"events/view{i % 3}", json.dumps(body).encode()))
    for i in range(20):
        user = ALICE if i % 2 else BOB
        body = {"event_id": f"old-{i}", "user_id": user, "timestamp": now_ms - 3 * 365 * DAY_MS + i}
        out.append(("events/import", json.dumps(body).encode()))
    out.append(("events/bad", f'{{"user_id": "{ALICE}", "note": '.encode()))  # never JSON
    return out


def post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_replay_after_relaxing_a_setting_then_erase_a_user(tmp_path: Path, stacks: list[Up]) -> None:
    data = tmp_path / "data"
    up, api = start(stacks, data)
    assert publish_raw(up.mqtt_url, messages(time.time_ns() // 1_000_000)) == 81
    wait_until(lambda: count_events(api) == 60, what="the recent events")
    wait_until(lambda: len(list(walk(api, "/dead-letters", headers={}))) == 21, what="21 dead letters")
    assert up.stop() == 0, up.output()

    up, api = start(stacks, data, env={"EVENTPIPE_MAX_PAST_DAYS": "0"})
    replayed = post(api, "/admin/dead-letters/replay")
    assert (replayed["examined"], replayed["stored"], replayed["still_failing"]) == (21, 20, 1)
    assert post(api, "/admin/dead-letters/replay")["stored"] == 0
    listed = [item["event_id"] for item in walk(api, "/events", headers={})]
    assert sorted(listed) == sorted([f"now-{i}" for i in range(60)] + [f"old-{i}" for i in range(20)])
    assert {item["status"] for item in walk(api, "/dead-letters", headers={}, status="replayed")} == {"replayed"}

    erased = post(api, "/admin/erase", {"user_id": ALICE})
    assert erased == {
        "events": 40,
        "dead_letters": 11,
        "complete": True,
    }  # 30 recent, 10 replayed; their 10 letters and the bad one
    left = list(walk(api, "/events", headers={}))
    assert {item["user_id"] for item in left} == {BOB} and len(left) == 40
    assert list(walk(api, "/events", headers={}, user_id=ALICE)) == []
    assert api.get("/events/now-1").status_code == 404
    assert count_events(api) == 40
    assert all(ALICE not in item["payload"] for item in walk(api, "/dead-letters", headers={}))
    audit = api.get("/admin/erasures", params={"user_id": ALICE}).json()["items"]
    assert [(record["key_name"], record["events"], record["dead_letters"]) for record in audit] == [
        ("up#generated", 40, 11)
    ]

    # The pipe goes on: Bob's next event is stored and read as usual.
    body = {"event_id": "after", "user_id": BOB, "timestamp": time.time_ns() // 1_000_000}
    assert publish_raw(up.mqtt_url, [("events/view0", json.dumps(body).encode())]) == 1
    wait_until(lambda: count_events(api) == 41, what="the event after the erasure")
    assert up.stop() == 0, up.output()
    assert count_rows(data) == 41


def count_events(api: httpx.Client) -> int:
    total: int = api.get("/stats/event-types").json()["total"]
    return total
