"""API keys as an operator uses them: the key `eventpipe up` made, and a keys file with a scoped partner."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import walk
from tests.support.stack import Up, run_eventpipe
from tests.support.wait import wait_until

PARTNER = "partner-key-0123456789abcdef"
ADMIN = "e2e-full-key-0123456789"


def start(stacks: list[Up], data_dir: Path, env: dict[str, str]) -> Up:
    up = Up(data_dir, env=env, prometheus=False)
    stacks.append(up)
    up.wait_ready()
    return up


def printed_key(up: Up) -> tuple[str, str]:
    line = next(line for line in up.lines if line.startswith("API key"))
    return line, line.rsplit(" ", 1)[1]


def status(up: Up, path: str, key: str) -> int:
    return httpx.get(f"{up.api_url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def test_the_generated_key_is_kept_and_still_works_after_a_restart(tmp_path: Path, stacks: list[Up]) -> None:
    data = tmp_path / "data"
    no_keys = {"EVENTPIPE_API_KEYS": "", "EVENTPIPE_API_KEYS_FILE": ""}
    first = start(stacks, data, no_keys)
    line, key = printed_key(first)
    kept = data / "api-key"
    assert f"generated, kept in {kept.resolve()}" in line
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600, "only its owner may read it"
    assert kept.read_text().strip() == key
    assert status(first, "/events?limit=1", key) == 200
    # The feed token and cursors are signed with a secret kept beside the key: a sync survives the restart.
    token = httpx.get(f"{first.api_url}/feed", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["next"]
    assert stat.S_IMODE((data / "cursor-secret").stat().st_mode) == 0o600
    assert first.stop(signal.SIGINT) == 0, first.output()

    again = start(stacks, data, no_keys)
    line = next(line for line in again.lines if line.startswith("API key"))
    assert line.startswith(f"API key: kept in {kept.resolve()} since an earlier start")
    assert key not in again.output(), "a key is printed once, when it is made, not at every start to a journal"
    assert kept.read_text().strip() == key, "a restart must not revoke the key a partner was given"
    # The line it gives to try reads the key from its file, in a shell, as a user pastes it.
    [tried] = [line.removeprefix("try: ") for line in again.lines if line.startswith("try: curl")]
    shown = subprocess.run(["sh", "-c", tried.replace("curl", "printf '%s\\n'", 1)], capture_output=True, text=True)
    assert f"Authorization: Bearer {key}" in shown.stdout.splitlines(), shown
    assert status(again, "/events?limit=1", key) == 200
    assert status(again, f"/feed?after={token}", key) == 200, "a sync must not start over after a restart"
    assert again.stop(signal.SIGINT) == 0, again.output()


def test_a_partner_sees_only_its_types_end_to_end_and_loses_access_when_removed(
    tmp_path: Path, stacks: list[Up]
) -> None:
    keys_file = tmp_path / "keys.json"
    partner = {"name": "partner", "sha256": hashlib.sha256(PARTNER.encode()).hexdigest(), "event_types": ["purchase"]}
    keys_file.write_text(json.dumps({"keys": [partner]}))
    up = start(stacks, tmp_path / "data", {"EVENTPIPE_API_KEYS": ADMIN, "EVENTPIPE_API_KEYS_FILE": str(keys_file)})
    assert not any(line.startswith("API key") for line in up.lines), "keys are set: none is generated"
    published = run_eventpipe("publish", "--mqtt-url", up.mqtt_url, "--count", "600", "--seed", "7")
    assert published.returncode == 0, published.stderr
    wait_until(lambda: up.metric("eventpipe_events_stored_total") == 600, what="600 stored")

    with httpx.Client(base_url=up.api_url, timeout=10) as client:
        everything = counts(client, ADMIN)
        assert len(everything["items"]) == 5 and everything["total"] == 600
        purchases = next(item["count"] for item in everything["items"] if item["event_type"] == "purchase")
        only = {"items": [{"event_type": "purchase", "count": purchases}], "total": purchases, "types": 1}
        assert counts(client, PARTNER) == only
        seen = list(walk(client, "/events", headers={"Authorization": f"Bearer {PARTNER}"}, limit=100))
        assert len(seen) == purchases and {item["event_type"] for item in seen} == {"purchase"}
        assert status(up, "/dead-letters", PARTNER) == 403

    keys_file.write_text(json.dumps({"keys": []}))
    assert status(up, "/events", PARTNER) == 401, "revoked by editing the file, without a restart"
    assert status(up, "/events", ADMIN) == 200
    assert up.stop(signal.SIGINT) == 0, up.output()


def counts(client: httpx.Client, key: str) -> dict[str, Any]:
    response = client.get("/stats/event-types", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_api_refuses_to_start_on_a_broken_keys_file_and_says_which_and_why(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"name": "partner", "sha256": PARTNER}]}))
    env = {**os.environ, "EVENTPIPE_API_KEYS": "", "EVENTPIPE_API_KEYS_FILE": str(keys_file)}
    done = run_eventpipe("api", env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"EVENTPIPE_API_KEYS_FILE {keys_file}: keys[0].sha256: 64 hex digits" in done.stderr
    assert PARTNER not in done.stderr + done.stdout, "a key pasted where its hash goes is not echoed"
