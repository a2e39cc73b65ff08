"""The restore drill as an operator runs it: back up `eventpipe up` while events stream in, ingest more,
stop, `eventpipe restore`, start again. Exactly the backed-up events come back, and ingest goes on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from eventpipe.port import free_port
from eventpipe.store.dsn import embedded_dsn
from tests.support.mqtt import publish_raw
from tests.support.stack import Up, count_rows, run_eventpipe, stored_ids
from tests.support.stream import Stream
from tests.support.wait import wait_until

NO_KEYS = {"EVENTPIPE_API_KEYS": "", "EVENTPIPE_API_KEYS_FILE": ""}
UNKNOWN = "20990101T000000Z-abcdef"
# Read by ClickHouse from the backup's own files (the Backup database engine), in a process of its own.
READ_BACKUP = """
import sys
from eventpipe.store.client import connect
client = connect(sys.argv[1])
client.command(f"CREATE DATABASE drill_read ENGINE = Backup('default', Disk('backups', '{sys.argv[2]}'))")
rows = client.query("SELECT event_id FROM drill_read.events FINAL WHERE event_type != '_probe'").result_rows
client.command("DROP DATABASE drill_read")
print("\\n".join(row[0] for row in rows))
"""


def start(stacks: list[Up], data_dir: Path) -> tuple[Up, httpx.Client]:
    """`eventpipe up` with no key set, and a client holding the admin key it generates for its operator."""
    up = Up(data_dir, env=NO_KEYS, prometheus=False)
    stacks.append(up)
    up.wait_ready()
    key = up.generated_key
    return up, httpx.Client(base_url=up.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def stored(api: httpx.Client, event_type: str = "stream") -> int:
    counts = api.get("/stats/event-types").json()["items"]
    return next((item["count"] for item in counts if item["event_type"] == event_type), 0)


def ids_in_backup(data_dir: Path, name: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", READ_BACKUP, f"chdb://{(data_dir / 'clickhouse').resolve()}", name],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=os.environ,
    )
    return [line for line in done.stdout.splitlines() if line]


def test_restore_drill_gives_back_exactly_what_was_backed_up_while_ingesting(tmp_path: Path, stacks: list[Up]) -> None:
    data = tmp_path / "data"
    up, api = start(stacks, data)
    # A user whose events the backup holds, erased after it: the restore erases them again itself.
    gone = [json.dumps({"event_id": f"gone-{i}", "event_type": "gone", "user_id": "gone"}).encode() for i in range(5)]
    assert publish_raw(up.mqtt_url, [("events/gone", payload) for payload in gone]) == len(gone)
    wait_until(lambda: stored(api, "gone") == len(gone), timeout=60, what="the user's events stored")
    stream = Stream(up.mqtt_url, count=3000, rate=600, prefix="drill")
    stream.start()
    wait_until(lambda: stored(api) >= 400, timeout=60, what="the stream flowing in")

    before = stored(api)
    answer = api.post("/admin/backups")
    after = stored(api)
    assert answer.status_code == 200, answer.text
    taken: dict[str, Any] = answer.json()
    assert stream.published < stream.count, "the backup must be taken while the stream still arrives"

    acknowledged = stream.acknowledged()
    assert len(acknowledged) == stream.count
    wait_until(lambda: stored(api) == stream.count, timeout=60, what="the whole stream stored")
    more = Stream(up.mqtt_url, count=500, rate=2000, prefix="more")
    more.start()
    assert len(more.acknowledged()) == more.count
    wait_until(lambda: stored(api) == stream.count + more.count, timeout=60, what="the events after the backup")
    assert taken["name"] in [item["name"] for item in api.get("/admin/backups").json()["items"]]
    # Erasures after the backup: the restore erases again the user whose events it brings back, and says
    # that it cannot find one who had none in it.
    for user in ("gone", "erased-after-the-backup"):
        assert api.post("/admin/erase", json={"user_id": user}).status_code == 200
    assert up.stop(signal.SIGINT) == 0, up.output()

    held = ids_in_backup(data, taken["name"])
    assert len(held) == len(set(held)) == taken["events"]
    in_backup = [event_id for event_id in held if not event_id.startswith("gone-")]
    assert len(in_backup) == len(held) - len(gone)
    assert before <= len(in_backup) <= after, "what the backup holds is what was stored while it was taken"
    # One producer, one worker, batches committed in order: a consistent backup holds a prefix of the
    # stream, never a batch in part, nor one without those before it.
    assert set(in_backup) == {f"drill-{i}" for i in range(len(in_backup))}

    # Named by the DSN of its store, as `restore --clickhouse-dsn` can: restored as that data dir all the same,
    # with the erasure secret `up` keeps there (without it, the erased user came back unsaid but for a warning).
    done = run_eventpipe("restore", "--clickhouse-dsn", embedded_dsn(data), "--backup", taken["name"])
    assert done.returncode == 0, done.stderr
    # Counted once it erased again the user it brought back.
    assert f"restored backup {taken['name']} into {data.resolve()}: {len(in_backup)} events" in done.stdout
    since = f"erased since backup {taken['name']} was taken"
    redone = f"erased again 1 of the 2 user(s) {since}, whose events or dead letters it held: 5 events"
    assert redone in done.stdout, done.stdout
    assert f"1 user(s) {since} had no events in it" in done.stderr, done.stderr
    restored = stored_ids(data)
    assert len(restored) == len(set(restored)), "a restored event shows twice"
    assert set(restored) == set(in_backup), "the backed-up events but the erased user's, none stored after the backup"

    again, api = start(stacks, data)
    assert api.get(f"/events/drill-{len(in_backup) - 1}").status_code == 200, "found by id after the restore"
    assert api.get("/events/gone-0").status_code == 404
    assert api.get("/events/more-0").status_code == 404
    resumed = Stream(again.mqtt_url, count=200, rate=1000, prefix="resume")
    resumed.start()
    assert len(resumed.acknowledged()) == resumed.count
    wait_until(lambda: stored(api) == len(in_backup) + resumed.count, timeout=60, what="ingest resumed")
    listed = [item["name"] for item in api.get("/admin/backups").json()["items"]]
    assert taken["name"] in listed and len(listed) == 2, f"the drill's backup and the one of what it replaced: {listed}"
    assert again.stop(signal.SIGINT) == 0, again.output()

    # The way back as printed, then back again: the backup of what that undo replaced was taken after the
    # drill's restore had brought the erased user back. Its own time said nothing of an erasure made before
    # it, and the user came back unsaid (found by an attack).
    undo = run_eventpipe("restore", "--data-dir", str(data), "--backup", replaced(done.stdout))
    # The restore's own erasure of "gone" came after the backup it took of what it replaced, but made again one
    # from before it: not one since (counted so, it took a user's later events from an undo).
    assert undo.returncode == 0 and "erased again" not in undo.stdout, undo.stdout
    redo = run_eventpipe("restore", "--data-dir", str(data), "--backup", replaced(undo.stdout))
    assert redo.returncode == 0, redo.stderr
    assert f"backup {replaced(undo.stdout)} holds again 1 user(s) erased before it was taken" in redo.stderr, (
        redo.stderr
    )
    assert set(stored_ids(data)) == set(in_backup) | {f"resume-{i}" for i in range(resumed.count)}


def replaced(restore_output: str) -> str:
    """The backup of what a restore replaced, as it prints it."""
    return restore_output.split("` brings it back", 1)[0].rsplit("--backup ", 1)[1]


# A running `eventpipe up` named as the holder of a data dir's lock, as a refusal names it.
UP_HOLDS = r"is in use by `eventpipe up` \(pid \d+\): stop it \(Ctrl-C or SIGTERM\), "


def test_restore_and_fill_refuse_a_running_stack_and_restore_a_backup_it_does_not_have(
    tmp_path: Path, stacks: list[Up]
) -> None:
    data = tmp_path / "data"
    up, api = start(stacks, data)
    assert api.post("/admin/backups").status_code == 200
    name = api.get("/admin/backups").json()["items"][0]["name"]

    running = run_eventpipe("restore", "--data-dir", str(data), "--backup", name)
    assert running.returncode == 2
    assert re.search(re.escape(str(data.resolve())) + " " + UP_HOLDS + "then restore", running.stderr), running.stderr
    # `bench fill` said only what chDB says of a store another process holds ("Cannot lock file").
    filling = run_eventpipe("bench", "fill", "--data-dir", str(data), "--count", "10")
    assert filling.returncode == 2
    assert re.search(re.escape(str(data.resolve())) + " " + UP_HOLDS + "then fill it", filling.stderr), filling.stderr
    # `api`, `migrate` and `worker` on the data dir's store said the engine's "Cannot lock file", and blamed
    # EVENTPIPE_CLICKHOUSE_DSN, which was not set.
    env = {**os.environ, "EVENTPIPE_DATA_DIR": str(data), "EVENTPIPE_CLICKHOUSE_DSN": ""}
    for command, then in (("api", "or use the API it serves"), ("migrate", "then migrate"), ("worker", "or let its")):
        beside = run_eventpipe(command, env=env)
        assert beside.returncode == 2, beside.stderr
        assert re.search(UP_HOLDS + re.escape(then), beside.stderr), beside.stderr
        assert "EVENTPIPE_CLICKHOUSE_DSN" not in beside.stderr, beside.stderr
    # The same store named by its DSN (a review).
    named = run_eventpipe(
        "migrate", env={**env, "EVENTPIPE_CLICKHOUSE_DSN": f"chdb://{(data / 'clickhouse').resolve()}"}
    )
    assert named.returncode == 2 and re.search(UP_HOLDS + "then migrate", named.stderr), named.stderr
    assert up.stop(signal.SIGINT) == 0, up.output()

    unknown = run_eventpipe("restore", "--data-dir", str(data), "--backup", UNKNOWN)
    assert unknown.returncode == 2
    assert (
        f"no backup {UNKNOWN} in {(data / 'backups').resolve()}; the newest there, newest first: {name}"
        in unknown.stderr
    )
    for hostile in ("../../etc", f"{name}/..", f"{name}' --"):
        refused = run_eventpipe("restore", "--data-dir", str(data), "--backup", hostile)
        assert refused.returncode == 2 and "not a backup name" in refused.stderr, refused.stderr
    assert count_rows(data) == 0 and not (data / "backups" / "etc").exists()


def test_restore_onto_a_server_never_prints_its_password() -> None:
    dsn = f"http://eventpipe_migrator:s3cret-pw@127.0.0.1:{free_port()}/eventpipe"
    for args, env, setting in (
        (["--clickhouse-dsn", dsn], None, "--clickhouse-dsn"),
        ([], {**os.environ, "EVENTPIPE_CLICKHOUSE_DSN": dsn}, "EVENTPIPE_CLICKHOUSE_DSN"),  # as compose runs it
    ):
        done = run_eventpipe("restore", *args, "--backup", UNKNOWN, env=env)
        assert done.returncode == 2
        assert "s3cret-pw" not in done.stdout + done.stderr
        assert "cannot reach ClickHouse at http://eventpipe_migrator:***@127.0.0.1" in done.stderr, done.stderr
        # Which setting to fix: the one from the environment was named by none.
        assert f"/eventpipe ({setting}): " in done.stderr, done.stderr
    # A password a URL parser splits: its first part would be read as the port, and quoted as one.
    for mark in "/?#":
        split = dsn.replace("s3cret-pw", f"s3cret{mark}pw")
        done = run_eventpipe("restore", "--clickhouse-dsn", split, "--backup", UNKNOWN)
        assert done.returncode == 2
        assert "s3cret" not in done.stdout + done.stderr, done.stderr
        assert "percent-encode" in done.stderr, done.stderr


def test_restore_without_options_on_no_data_dir_says_where_that_dir_came_from(tmp_path: Path) -> None:
    # It said "... is no directory: give the --data-dir of `eventpipe up`" of a folder the user never named.
    outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    missing = tmp_path / "missing"
    done = run_eventpipe("restore", "--backup", UNKNOWN, env={**outside, "EVENTPIPE_DATA_DIR": str(missing)})
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith(f"eventpipe restore: error: {missing} (EVENTPIPE_DATA_DIR, else ./.eventpipe"), said
    assert "EVENTPIPE_CLICKHOUSE_DSN is not set" in said and "--data-dir" in said, said
    done = run_eventpipe("restore", "--data-dir", str(missing), "--backup", UNKNOWN, env=outside)
    assert done.stderr.strip().endswith(f"{missing} is no directory: give the --data-dir of `eventpipe up`")
    assert not missing.exists()
