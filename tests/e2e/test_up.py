"""`eventpipe up` and `eventpipe publish` as a new user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from eventpipe.port import free_port
from eventpipe.stack.child import accepts, find_binary
from eventpipe.telemetry.exporter import API_PATH, BROKER_PATH
from tests.support import observability as obs
from tests.support.disk import fill, full_filesystem
from tests.support.mqtt import publish_raw, stream_publish
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.stack import Up, child_pid, count_rows, run_eventpipe
from tests.support.wait import wait_until

SAVES = Path(__file__).parents[1] / "unit" / "data" / "mosquitto-2.0.11"  # made by Mosquitto 2.0.11


def start(
    stacks: list[Up], data_dir: Path, *extra: str, env: dict[str, str] | None = None, prometheus: bool = False
) -> Up:
    up = Up(data_dir, *extra, env=env, prometheus=prometheus)
    stacks.append(up)
    up.wait_ready()
    return up


def test_up_ingests_published_events_and_ctrl_c_loses_nothing(tmp_path: Path, stacks: list[Up]) -> None:
    up = start(stacks, tmp_path / "data", prometheus=True)
    assert any(line.startswith("API key") for line in up.lines), "no key was set, so one must be printed"
    assert f"prometheus=http://127.0.0.1:{up.prometheus_port}" in up.wait_ready()
    assert up.get("/healthz") == (200, b'{"status":"ok"}')
    status, body = up.get("/readyz")
    assert (status, json.loads(body)["status"]) == (200, "ready")

    done = run_eventpipe("publish", "--mqtt-url", up.mqtt_url, "--count", "3000")
    assert done.returncode == 0, done.stderr
    assert "3000 acknowledged" in done.stdout

    wait_until(lambda: up.metric("eventpipe_events_stored_total") == 3000, what="3000 stored")
    # The embedded store's room, which the disk alerts read (a ClickHouse server reports its own).
    assert 0 < up.metric("eventpipe_store_filesystem_avail_bytes") <= up.metric("eventpipe_store_filesystem_size_bytes")
    assert up.stop(signal.SIGINT) == 0, up.output()
    assert "stopped cleanly" in up.output()
    assert count_rows(up.data_dir) == 3000


def test_every_alert_prometheus_loads_links_to_its_runbook(tmp_path: Path, stacks: list[Up]) -> None:
    url = "https://gitlab.example.com/team/eventpipe/-/blob/0123abc/docs/runbooks.md"
    # The API and the worker on another loopback address: Prometheus scraped 127.0.0.1 whatever these said,
    # so nothing was scraped, EventpipeWorkerDown and EventpipeAPIDown paged, and no other alert could fire.
    hosts = {"EVENTPIPE_API_HOST": "127.0.0.2", "EVENTPIPE_METRICS_HOST": "127.0.0.2"}
    up = start(stacks, tmp_path / "data", env={"EVENTPIPE_RUNBOOK_URL": url, **hosts}, prometheus=True)

    def alerts() -> list[dict[str, Any]] | None:
        address = f"http://127.0.0.1:{up.prometheus_port}/api/v1/rules?type=alert"
        try:
            with urllib.request.urlopen(address, timeout=10) as response:
                groups = json.load(response)["data"]["groups"]
        except OSError:  # 503 until it has started
            return None
        return [rule for group in groups for rule in group["rules"]] or None

    loaded = wait_until(alerts, what="the alert rules in Prometheus")
    assert len(loaded) == len(obs.alert_rules())
    anchors = obs.runbook_anchors()
    for rule in loaded:
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == url, f"{rule['name']}: {rule['annotations']['runbook_url']}"
        assert anchors.get(anchor) == rule["name"], f"{rule['name']}: docs/runbooks.md has no heading #{anchor}"

    def scraped() -> dict[str, str] | None:
        address = f"http://127.0.0.1:{up.prometheus_port}/api/v1/targets"
        with urllib.request.urlopen(address, timeout=10) as response:
            targets = json.load(response)["data"]["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        return health if "unknown" not in health.values() else None

    health = wait_until(scraped, what="every target scraped once")
    assert health == {"api": "up", "ingest-worker": "up", "mosquitto": "up", "prometheus": "up"}, health
    assert up.stop() == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_commits_what_the_worker_holds(tmp_path: Path, stacks: list[Up], stop: signal.Signals) -> None:
    # A timer that never fires and batches that never fill: only the shutdown can commit. SIGHUP, a closed
    # terminal's, killed the process on the spot: none of the 800 committed, all redelivered at the next start.
    env = {"EVENTPIPE_BATCH_MAX_MS": "600000", "EVENTPIPE_BATCH_MAX_ROWS": "5000"}
    up = start(stacks, tmp_path / "data", env=env)
    assert run_eventpipe("publish", "--mqtt-url", up.mqtt_url, "--count", "800").returncode == 0
    wait_until(lambda: up.metric("eventpipe_messages_received_total") == 800, what="800 received")
    assert up.metric("eventpipe_events_stored_total") == 0
    assert up.stop(stop) == 0, up.output()
    assert count_rows(up.data_dir) == 800


def test_a_stop_signal_while_starting_stops_it_before_the_api_opens(tmp_path: Path, stacks: list[Up]) -> None:
    # A supervisor's start timeout, or a Ctrl-C while it migrates: it went on to open the API and print the
    # banner with the API key, then stopped.
    up = Up(tmp_path / "data", prometheus=False)
    stacks.append(up)
    wait_until(lambda: any("applied migration 1 in" in line for line in up.lines), what="the first migration")
    assert up.stop(signal.SIGTERM) == 0, up.output()
    assert "SIGTERM received: flushing, acknowledging and stopping" in up.output()
    assert not [line for line in up.lines if "eventpipe ready" in line or "Bearer" in line], up.output()


def test_a_stop_signal_while_the_broker_is_out_of_reach_stops_it_at_once(tmp_path: Path, stacks: list[Up]) -> None:
    # `up` waited out its 15 s for the worker's connection before it looked at the signal, then exited 1
    # ("could not connect"): a supervisor's stop took 15 s and looked like a failure. It also said nothing
    # while it waited.
    closed = free_port()  # nothing listens there
    up = Up(tmp_path / "data", "--mqtt-url", f"mqtt://127.0.0.1:{closed}", prometheus=False)
    stacks.append(up)
    wait_until(lambda: any("waiting for the MQTT broker at" in line for line in up.lines), what="the wait", timeout=30)
    assert up.stop(signal.SIGTERM, timeout=5) == 0, up.output()
    assert "could not connect" not in up.output(), up.output()
    assert not [line for line in up.lines if "eventpipe ready" in line or "Bearer" in line], up.output()


def test_a_broker_out_of_reach_for_15_s_exits_2_naming_the_setting_to_fix(tmp_path: Path, stacks: list[Up]) -> None:
    # README said it exited 1; it exits 2, as every error it names does, and named no setting.
    closed = free_port()  # nothing listens there
    up = Up(tmp_path / "data", "--mqtt-url", f"mqtt://ingest:s3cret@127.0.0.1:{closed}", prometheus=False)
    stacks.append(up)
    assert up.process.wait(60) == 2, up.output()
    wait_until(lambda: "could not connect" in up.output(), what="the error line")
    assert f"at mqtt://ingest:***@127.0.0.1:{closed} within 15s (--mqtt-url, or EVENTPIPE_MQTT_URL)" in up.output()
    assert "s3cret" not in up.output()


def test_ctrl_c_to_the_process_group_still_acks_everything_held(tmp_path: Path, stacks: list[Up]) -> None:
    # A terminal's Ctrl-C signals the whole foreground group; the broker started
    # by `up` must outlive the worker's final acks, or everything comes back.
    env = {"EVENTPIPE_BATCH_MAX_MS": "600000"}
    data = tmp_path / "data"
    up = start(stacks, data, env=env)
    assert run_eventpipe("publish", "--mqtt-url", up.mqtt_url, "--count", "500").returncode == 0
    wait_until(lambda: up.metric("eventpipe_messages_received_total") == 500, what="500 received")
    assert up.stop(signal.SIGINT, group=True) == 0, up.output()
    again = start(stacks, data, env=env)
    assert run_eventpipe("publish", "--mqtt-url", again.mqtt_url, "--count", "1").returncode == 0
    wait_until(lambda: again.metric("eventpipe_messages_received_total") >= 1, what="the new event")
    assert again.metric("eventpipe_messages_redelivered_total") == 0, "held messages were not acked"
    assert again.stop() == 0
    assert count_rows(data) == 501


def test_with_an_external_broker_the_session_outlives_a_restart(
    tmp_path: Path, stacks: list[Up], broker: LocalBroker | ContainerBroker
) -> None:
    data = tmp_path / "data"
    # With a password in the flag, as a user might type it (the local broker takes any).
    url = broker.url if "@" in broker.url else broker.url.replace("mqtt://", "mqtt://worker:flag-pw@", 1)
    first = start(stacks, data, "--mqtt-url", url)
    assert not (data / "mosquitto").exists(), "--mqtt-url must not start a broker"
    told = [line for line in first.lines if "the password in --mqtt-url shows in `ps`" in line]
    assert told and "set EVENTPIPE_MQTT_URL" in told[0], first.lines[:20]
    assert first.stop() == 0
    # Published while nothing consumes: the broker queues them for the session.
    assert run_eventpipe("publish", "--mqtt-url", broker.url, "--count", "1200").returncode == 0
    # The same broker named by the environment, `--mqtt-url` alone: no password on the command line.
    second = start(stacks, data, "--mqtt-url", env={"EVENTPIPE_MQTT_URL": url})
    assert not any("password" in line for line in second.lines), second.lines[:20]
    wait_until(lambda: second.metric("eventpipe_events_stored_total") == 1200, what="the queued backlog")
    assert second.stop() == 0
    assert count_rows(data) == 1200


def test_a_broker_killed_before_its_first_autosave_comes_back_with_the_workers_session(
    tmp_path: Path, stacks: list[Up]
) -> None:
    # Killed within 10 s of its start, before its first autosave, the broker came back without the worker's
    # session: what producers sent before the worker subscribed again was acknowledged and dropped (6,480 of
    # 30,000 in an attack).
    first = start(stacks, tmp_path)
    os.kill(child_pid(first.process.pid, "mosquitto"), signal.SIGKILL)
    assert first.process.wait(60) == 1
    # The broker alone from the files it left, as the next start brings it back: producers publish before
    # the worker is there.
    broker = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto" / "mosquitto.conf")])
    try:
        wait_until(lambda: accepts(first.mqtt_port), what="the broker listening")
        events = [json.dumps({"event_id": f"killed-{n}", "event_type": "stream"}).encode() for n in range(200)]
        assert publish_raw(first.mqtt_url, [("events/stream", event) for event in events]) == 200
    finally:
        broker.terminate()
        broker.wait(30)
    second = start(stacks, tmp_path)
    wait_until(lambda: second.metric("eventpipe_events_stored_total") >= 200, timeout=60, what="the events stored")
    assert second.stop() == 0
    assert count_rows(tmp_path) == 200


def test_without_mosquitto_up_says_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "EVENTPIPE_MOSQUITTO_BINARY": "mosquitto-not-installed"}
    done = run_eventpipe("up", "--data-dir", str(tmp_path), env=env, timeout=60)
    assert done.returncode == 2
    assert "apt-get install mosquitto" in done.stderr
    assert "--mqtt-url" in done.stderr


def running_with(text: str) -> list[int]:
    """The pids of the processes whose command line holds `text`, read from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended meanwhile
            continue
    return found


def test_a_wrapper_script_as_the_broker_leaves_nothing_running(tmp_path: Path, stacks: list[Up]) -> None:
    # The shell of a wrapper without `exec` died of the SIGUSR1 that asks for a save; signalled alone, it left
    # the real broker running under init, holding the port and the data dir's lock: the next `up` was refused.
    wrapper = tmp_path / "mosquitto-wrapper"
    wrapper.write_text(f'#!/bin/sh\n{find_binary("mosquitto")} "$@"\n')
    wrapper.chmod(0o755)
    data = tmp_path / "data"
    env = {**os.environ, "EVENTPIPE_MOSQUITTO_BINARY": str(wrapper)}
    ports = [f"--{name}-port={free_port()}" for name in ("mqtt", "api", "metrics")]
    try:
        done = run_eventpipe("up", "--data-dir", str(data), *ports, "--prometheus-port=0", env=env, timeout=60)
        assert running_with(str(data)) == [], done.stderr
        assert done.returncode == 2, done.stdout + done.stderr
        assert "EVENTPIPE_MOSQUITTO_BINARY must be mosquitto itself" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        for pid in running_with(str(data)):
            os.kill(pid, signal.SIGKILL)
    assert start(stacks, data).stop() == 0


def test_rules_kept_where_up_copies_them_are_refused_not_deleted(tmp_path: Path) -> None:
    # EVENTPIPE_PROMETHEUS_RULES_DIR set to the folder README names as where up writes the loaded copy:
    # up deleted the operator's rule files, copied nothing, and Prometheus ran without rules, saying nothing.
    data = tmp_path / "data"
    rules = data / "prometheus" / "rules"
    rules.mkdir(parents=True)
    (rules / "alerts.yml").write_text((obs.RULES / "alerts.yml").read_text())
    env = {**os.environ, "EVENTPIPE_PROMETHEUS_RULES_DIR": str(rules)}
    ports = [f"--{name}-port={free_port()}" for name in ("mqtt", "api", "metrics", "prometheus")]
    done = run_eventpipe("up", "--data-dir", str(data), *ports, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"EVENTPIPE_PROMETHEUS_RULES_DIR {rules} is, holds or is inside" in done.stderr
    assert "Traceback" not in done.stderr
    assert (rules / "alerts.yml").read_text() == (obs.RULES / "alerts.yml").read_text()


@pytest.mark.parametrize("fault", ["a rule file that is not UTF-8", "a file where its folder goes"])
def test_rules_that_cannot_be_copied_skip_prometheus_and_the_stack_runs(
    tmp_path: Path, stacks: list[Up], fault: str
) -> None:
    # Prometheus is an optional extra, but a failed copy of its rules was a traceback: the whole stack stopped
    # (exit 1) after its broker and worker had started.
    rules, data = tmp_path / "rules", tmp_path / "data"
    rules.mkdir()
    (rules / "alerts.yml").write_bytes(b"groups: []\n# \xff\n" if fault.endswith("UTF-8") else b"groups: []\n")
    if fault.endswith("goes"):
        data.mkdir()
        (data / "prometheus").write_text("")
    up = start(stacks, data, env={"EVENTPIPE_PROMETHEUS_RULES_DIR": str(rules)}, prometheus=True)
    assert "prometheus=" not in up.wait_ready()
    if fault.endswith("UTF-8"):
        assert "WARNING eventpipe: Prometheus not started: cannot copy its rules from" in up.output()
        assert f"{rules / 'alerts.yml'} is not UTF-8 text" in up.output()
    else:  # the data dir's fault, not the rules'
        assert "Prometheus not started: cannot write the copy of its rules in" in up.output()
        assert "(--data-dir, or EVENTPIPE_DATA_DIR)" in up.output()
    assert up.get("/healthz") == (200, b'{"status":"ok"}')
    assert up.stop() == 0, up.output()
    assert "Traceback" not in up.output()


def test_a_prometheus_on_path_that_cannot_run_is_skipped_and_the_stack_runs(tmp_path: Path, stacks: list[Up]) -> None:
    # Prometheus is an optional extra, but one that is there and cannot be executed was a Popen traceback.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "prometheus").write_bytes(b"#!/nonexistent/sh\n")
    (tmp_path / "bin" / "prometheus").chmod(0o755)
    up = start(stacks, tmp_path / "data", env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}, prometheus=True)
    assert "prometheus=" not in up.wait_ready()
    # A warning, as one on PATH was meant to run (not installed, it is INFO: a choice).
    assert f"WARNING eventpipe: Prometheus not started: cannot run {tmp_path / 'bin' / 'prometheus'}: " in (up.output())
    assert up.stop() == 0, up.output()
    assert "Traceback" not in up.output()


@pytest.mark.parametrize("content", [b"#!/nonexistent/sh\n", b"\x7fELF not a program\n"], ids=["#!", "format"])
def test_a_mosquitto_binary_that_cannot_run_is_named_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    # A file that is there but cannot be executed was a FileNotFoundError or OSError traceback from Popen.
    binary = tmp_path / "mosquitto"
    binary.write_bytes(content)
    binary.chmod(0o755)
    env = {**os.environ, "EVENTPIPE_MOSQUITTO_BINARY": str(binary)}
    ports = [f"--{name}-port={free_port()}" for name in ("mqtt", "api", "metrics")]
    done = run_eventpipe("up", "--data-dir", str(tmp_path / "data"), *ports, "--prometheus-port=0", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"eventpipe up: error: cannot run {binary}: " in done.stderr
    assert "set EVENTPIPE_MOSQUITTO_BINARY to Mosquitto" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_on_a_full_disk_names_the_data_dir_without_a_traceback(tmp_path: Path) -> None:
    # It was a raw ENOSPC traceback from the first secret it keeps, and an empty temporary file each time.
    with full_filesystem(tmp_path / "small") as data_dir:
        done = run_eventpipe("up", "--data-dir", str(data_dir), "--prometheus-port", "0", timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"in the data dir {data_dir}: No space left on device (--data-dir" in done.stderr
        assert "Traceback" not in done.stderr
        assert not [path.name for path in data_dir.iterdir() if path.name.startswith(".mqtt-session-secret")]


def test_a_store_the_engine_cannot_open_names_the_data_dir_not_an_unset_dsn(tmp_path: Path) -> None:
    # It said the engine's error alone, and the API's part blamed EVENTPIPE_CLICKHOUSE_DSN, which was not set.
    data_dir = tmp_path / "data"
    (data_dir / "clickhouse").mkdir(parents=True, mode=0o700)
    (data_dir / "clickhouse" / "metadata").write_text("not a directory")
    env = {name: value for name, value in os.environ.items() if name != "EVENTPIPE_CLICKHOUSE_DSN"}
    ports = [f"--{name}-port={free_port()}" for name in ("mqtt", "api", "metrics")]
    done = run_eventpipe("up", "--data-dir", str(data_dir), *ports, "--prometheus-port=0", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith(f"eventpipe up: error: ClickHouse at chdb://{(data_dir / 'clickhouse').resolve()} "), said
    assert "(the data dir: EVENTPIPE_DATA_DIR, or `up --data-dir`)" in said and "metadata" in said, said
    assert "EVENTPIPE_CLICKHOUSE_DSN" not in done.stderr and "Traceback" not in done.stderr


def test_a_start_on_a_full_disk_serves_and_leaves_the_store_whole(tmp_path: Path, stacks: list[Up]) -> None:
    # Every start altered two tables, which writes their definitions again: on a full disk that left
    # restores.sql empty, and no later start opened the store, with space freed or not (found by an attack).
    with full_filesystem(tmp_path / "small", size="160m", filled=False) as mount:
        data_dir = mount / "data"
        assert start(stacks, data_dir).stop() == 0
        fill(mount / "filler")
        ports = [f"--{name}-port={free_port()}" for name in ("mqtt", "api", "metrics")]
        env = {**os.environ, "EVENTPIPE_RETENTION_DAYS": "30"}  # a schema change: refused, nothing changed
        done = run_eventpipe("up", "--data-dir", str(data_dir), *ports, "--prometheus-port=0", env=env, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "free, and a schema change needs 32 MiB" in done.stderr
        full = start(stacks, data_dir)  # reads served; ingest halted until there is room
        assert full.get("/readyz")[0] == 200
        (mount / "filler").unlink()
        assert full.stop() == 0, full.output()  # what it held, committed once there was room
        again = start(stacks, data_dir)
        assert again.stop() == 0, again.output()


def test_a_stop_whose_broker_could_not_save_its_queue_says_so_and_exits_1(tmp_path: Path, stacks: list[Up]) -> None:
    # On a full or read-only disk Mosquitto's save fails in its own log only, and `up` exited 0 saying the
    # worker's unacknowledged messages would be redelivered (39,893 said so, none were; an attack). A
    # directory where the save is written makes it fail as such a disk does.
    up = start(stacks, tmp_path / "data")
    (tmp_path / "data" / "mosquitto" / "data" / "mosquitto.db.new").mkdir()
    assert up.stop() == 1, up.output()
    assert "mosquitto did not save its queue at its stop" in up.output()


def test_a_stop_whose_broker_save_was_cut_short_says_so_and_exits_1(tmp_path: Path, stacks: list[Up]) -> None:
    # Onto a full disk Mosquitto 2.0.11 renamed an empty save into place, saying nothing: a new file, which
    # `up` took for a save and exited 0, and its next start came up with no queue. 2.1 checks each step of
    # its save and renames nothing it could not write in full: no new file, the stop's save not made.
    up = start(stacks, tmp_path / "data")
    with full_filesystem(tmp_path / "data" / "mosquitto" / "data"):
        assert up.stop() == 1, up.output()
        if b"mosquitto version 2.0." in (tmp_path / "data" / "mosquitto" / "mosquitto.log").read_bytes():
            assert "mosquitto's save at its stop was cut short: " in up.output()
            assert "is cut short at byte 0: " in up.output()
        else:
            assert "mosquitto did not save its queue at its stop" in up.output()


def test_a_broker_save_cut_short_stops_up_until_it_is_set_aside_as_up_says(tmp_path: Path, stacks: list[Up]) -> None:
    # Mosquitto 2.0.11 renames into place a save it could not write in full (a full disk); on the next
    # start it refused it ("Couldn't open database") or started without a word on part of its queue.
    data_dir = tmp_path / "data"
    saved = data_dir / "mosquitto" / "data" / "mosquitto.db"
    saved.parent.mkdir(parents=True)
    saved.write_bytes((SAVES / "whole.db").read_bytes())  # Mosquitto 2.0.11's, with a queue
    assert start(stacks, data_dir).stop() == 0, "a whole save starts"
    whole = saved.read_bytes()  # written at that stop
    saved.write_bytes(whole[:-3])
    ports = [f"--{name}-port={free_port()}" for name in ("mqtt", "api", "metrics")]
    done = run_eventpipe("up", "--data-dir", str(data_dir), *ports, "--prometheus-port=0", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith(f"eventpipe up: error: {saved.resolve()} ({len(whole) - 3:,} bytes), "), said
    assert "is cut short at byte " in said and "queue of acknowledged events in it is partly lost" in said, said
    assert "Free space on the disk of " in said and "Traceback" not in done.stderr, said
    assert saved.read_bytes() == whole[:-3], "not salvaged: left for the user"
    subprocess.run(["sh", "-c", said.rsplit("keeping it for inspection: ", 1)[1]], check=True)
    assert start(stacks, data_dir).stop() == 0, "set aside, it starts with an empty queue"
    (aside,) = saved.parent.glob("mosquitto.db.cut-*")
    assert aside.read_bytes() == whole[:-3]


def test_up_with_mqtt_url_alone_and_no_broker_in_the_environment_says_so(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != "EVENTPIPE_MQTT_URL"}
    done = run_eventpipe("up", "--mqtt-url", "--data-dir", str(tmp_path), env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--mqtt-url alone uses the broker EVENTPIPE_MQTT_URL names, and it is not set" in done.stderr


def test_publish_to_a_missing_broker_fails_clearly_naming_where_the_address_came_from() -> None:
    done = run_eventpipe("publish", "--mqtt-url", "mqtt://127.0.0.1:1", "--count", "5", timeout=60)
    assert done.returncode == 2
    assert "cannot reach the MQTT broker at mqtt://127.0.0.1:1: " in done.stderr and "(--mqtt-url)" in done.stderr
    env = {**os.environ, "EVENTPIPE_MQTT_URL": "mqtt://127.0.0.1:1"}
    assert (
        run_eventpipe("publish", "--count", "5", env=env, timeout=60).stderr.rstrip().endswith("(EVENTPIPE_MQTT_URL)")
    )


def test_a_taken_mqtt_port_is_reported_not_mistaken_for_ours(
    tmp_path: Path, broker: LocalBroker | ContainerBroker
) -> None:
    with contextlib.ExitStack() as stack:
        if isinstance(broker, LocalBroker):
            port = broker.url.rsplit(":", 1)[1]  # another Mosquitto, the likeliest to be taken for ours
        else:
            # A container's port is published on the Docker host, which is not this one under
            # GitLab's Docker-in-Docker: taken here by a listener instead.
            taken = stack.enter_context(socket.socket())
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
        done = run_eventpipe("up", "--data-dir", str(tmp_path), "--mqtt-port", port, timeout=60)
    assert done.returncode == 2, done.stdout
    assert f"port {port} is already in use" in done.stderr
    assert "a stock Mosquitto drops queued messages past 1,000" in done.stderr
    assert "ready" not in done.stdout


def test_a_second_up_on_the_same_data_dir_is_refused(tmp_path: Path, stacks: list[Up]) -> None:
    first = start(stacks, tmp_path / "data")
    done = run_eventpipe("up", "--data-dir", str(first.data_dir), "--mqtt-port", "1", timeout=60)
    assert done.returncode == 2
    assert f"in use by `eventpipe up` (pid {first.process.pid}): stop it" in done.stderr, done.stderr
    assert first.stop() == 0


def test_port_0_serves_on_free_ports_that_the_banner_and_prometheus_name(tmp_path: Path, stacks: list[Up]) -> None:
    # Port 0 asks for any free port; the banner printed "api=http://127.0.0.1:0" and a curl to port 0,
    # and Prometheus was told to scrape port 0.
    up = start(stacks, tmp_path, "--api-port", "0", "--metrics-port", "0", prometheus=True)
    fields = dict(part.split("=", 1) for part in up.wait_ready().split() if "=" in part)
    api_port, metrics_port = (int(fields[name].split("/metrics")[0].rsplit(":", 1)[1]) for name in ("api", "metrics"))
    assert api_port and metrics_port, fields
    key = next(line for line in up.lines if line.startswith("API key")).rsplit(" ", 1)[1]
    assert f"'http://127.0.0.1:{api_port}/events?limit=5'" in up.lines[-1], up.lines[-1]  # the curl to try
    assert up.get("/events?limit=1", api_port, key)[0] == 200
    assert b"eventpipe_events_stored_total" in up.get("/metrics", metrics_port)[1]
    # The API's series beside the worker's, on a path of their own; not on the API's port, which keys reach.
    assert b'eventpipe_api_key_requests_total{code="200"' in up.get(API_PATH, metrics_port)[1]
    with pytest.raises(urllib.error.HTTPError) as refused:
        up.get("/metrics", api_port, key)
    assert refused.value.code == 404
    if "prometheus" in fields:  # installed here

        def scraped() -> dict[str, dict[str, Any]] | None:
            _status, body = up.get("/api/v1/targets", up.prometheus_port)
            jobs = {target["labels"]["job"]: target for target in json.loads(body)["data"]["activeTargets"]}
            return jobs if all(jobs.get(job, {}).get("health") == "up" for job in ("api", "ingest-worker")) else None

        jobs = wait_until(scraped, timeout=30, what="Prometheus scraping the worker and the API")
        assert jobs["api"]["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}{API_PATH}", jobs["api"]
        assert jobs["ingest-worker"]["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}/metrics"
    assert up.stop() == 0, up.output()


def _interrupted(*args: str, after_s: float, stop: signal.Signals = signal.SIGINT) -> tuple[int, str, str]:
    """Run an eventpipe command, send it `stop` (Ctrl-C's SIGINT) after `after_s`, and return its exit code and
    output."""
    import subprocess
    import time

    from tests.support.stack import eventpipe_command

    process = subprocess.Popen([*eventpipe_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(after_s)
        assert process.poll() is None, process.communicate()
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


def test_ctrl_c_while_up_waits_for_a_data_dirs_lock_stops_it_without_a_traceback(tmp_path: Path) -> None:
    from eventpipe.stack.lock import hold

    # `up` waits 10 s for a lock a stopping `up` or its children still hold; Ctrl-C there was a traceback.
    with hold(tmp_path):
        code, out, err = _interrupted("up", "--data-dir", str(tmp_path), "--mqtt-port", str(free_port()), after_s=3)
    assert code == 130, out + err
    assert "Traceback" not in err and "eventpipe up: interrupted" in err, err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_on_publish_reports_what_the_broker_took(
    broker: LocalBroker | ContainerBroker, stop: signal.Signals
) -> None:
    # `--count` large and a rate is how a steady stream is run; Ctrl-C, or `timeout`'s SIGTERM, is how it ends.
    # It was a traceback (SIGTERM: no word at all) that did not say how many events were sent and acknowledged.
    args = ("publish", "--mqtt-url", broker.url, "--count", "1000000", "--rate", "50")
    code, out, err = _interrupted(*args, after_s=4, stop=stop)
    assert code == 130, out + err
    assert "Traceback" not in err, err
    published = int(out.split("published ", 1)[1].split(" ", 1)[0])
    assert published > 0 and f"{published} acknowledged by the broker (QoS 1)" in out, out
    assert "interrupted before --count" in out, out


def test_the_container_commands_run_natively(tmp_path: Path, broker: LocalBroker | ContainerBroker) -> None:
    # migrate, worker and api are what the images run; here on the embedded engine.
    import subprocess
    import urllib.request

    from eventpipe.store.migration import MIGRATIONS
    from tests.support.stack import eventpipe_command

    metrics_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "EVENTPIPE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}",
        "EVENTPIPE_MQTT_URL": broker.url,
        "EVENTPIPE_METRICS_PORT": str(metrics_port),
        "EVENTPIPE_API_PORT": str(api_port),
        "EVENTPIPE_PROBE_INTERVAL_S": "0",
        "EVENTPIPE_MQTT_SESSION_SECRET": "container-commands-session-secret-0123",
    }
    migrated = run_eventpipe("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"migrations applied: {[m.version for m in MIGRATIONS]}" in migrated.stdout
    assert "none, schema is current" in run_eventpipe("migrate", env=env).stdout

    worker = subprocess.Popen([*eventpipe_command(), "worker"], env=env, stderr=subprocess.PIPE, text=True)
    try:

        def metric(name: str) -> float:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                return -1.0
            # Absent while the worker assembles: its metrics port serves before its metrics are registered.
            # A StopIteration here failed the test under load, signalling a worker not yet ready for it.
            line = next((line for line in text.splitlines() if line.startswith(f"{name} ")), f"{name} -1")
            return float(line.split()[1])

        def stored() -> float:
            return metric("eventpipe_events_stored_total")

        # Subscribed, not merely serving metrics: a new session gets nothing published before its subscription.
        wait_until(lambda: metric("eventpipe_mqtt_connected") == 1, what="the worker subscribed")
        assert run_eventpipe("publish", "--mqtt-url", broker.url, "--count", "300").returncode == 0
        wait_until(lambda: stored() == 300, what="300 stored by eventpipe worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        if worker.poll() is None:  # a failure above: its own report, not this one's
            worker.kill()
            worker.wait()

    keyless = run_eventpipe("api", env=env, timeout=60)
    assert keyless.returncode == 2 and "EVENTPIPE_API_KEYS is empty" in keyless.stderr

    env["EVENTPIPE_API_KEYS"] = key = "container-key-0123456789"
    api = subprocess.Popen([*eventpipe_command(), "api"], env=env, stderr=subprocess.DEVNULL)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ready, what="eventpipe api ready")
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/stats/event-types",
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a fixed http URL
            assert json.loads(response.read())["total"] == 300
        # Its metrics on EVENTPIPE_METRICS_PORT, as the worker's were (compose scrapes api:9464).
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert 'eventpipe_api_key_requests_total{code="200",key="env#1"} 1.0' in response.read().decode()
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0
    finally:
        if api.poll() is None:
            api.kill()
            api.wait()


def test_idle_sockets_on_the_metrics_port_take_no_threads(tmp_path: Path, stacks: list[Up]) -> None:
    # 500 connections that never send a request once made 500 threads in the worker.
    import socket

    up = start(stacks, tmp_path / "data")
    pid = up.process.pid

    def threads() -> int:
        return len(os.listdir(f"/proc/{pid}/task"))

    def descriptors() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    before_threads, before_descriptors = threads(), descriptors()
    idlers = [socket.create_connection(("127.0.0.1", up.metrics_port), timeout=10) for _ in range(500)]
    try:
        assert up.metric("eventpipe_mqtt_connected") == 1, "the metrics endpoint stopped answering"
        # Slack for the threads chDB and the API come and go with; one per socket would be 500.
        assert threads() - before_threads < 50
        assert descriptors() - before_descriptors < 100
    finally:
        for sock in idlers:
            sock.close()
    assert up.stop() == 0


def test_up_counts_the_packets_its_broker_refuses_for_size(tmp_path: Path, stacks: list[Up]) -> None:
    # Mosquitto keeps no such count; `up` reads its broker's log, from where this run's part begins.
    refused = 'eventpipe_broker_oversize_packets_total{action="refused"}'
    up = start(stacks, tmp_path / "data")
    answer = stream_publish(up.mqtt_url, "events/huge", 16 * 1024 * 1024)
    assert (answer.packet, answer.reason) == ("disconnect", 0x95), answer
    # With the broker's other metrics, as compose's exporter serves it (job "mosquitto").
    wait_until(lambda: up.metric(refused, BROKER_PATH) == 1, what="the refusal counted")
    assert up.stop() == 0
    again = start(stacks, tmp_path / "data")
    assert again.metric(refused, BROKER_PATH) == 0, "the last run's refusals were counted again"
    assert again.stop() == 0


def _stat(path: Path) -> str:
    """A process's /proc stat line, or "" for one that ended since /proc was listed (another test's, in
    parallel: a fresh clone's CI failed on ProcessLookupError)."""
    try:
        return path.read_text()
    except (ProcessLookupError, FileNotFoundError):
        return ""


def test_a_prometheus_that_dies_is_reported_and_the_stack_goes_on(tmp_path: Path, stacks: list[Up]) -> None:
    # It died silently, a zombie until `up` exited, and the alerts the README points native users to were gone.
    up = start(stacks, tmp_path / "data", prometheus=True)
    up.wait_ready()
    children = [text for text in map(_stat, Path("/proc").glob("[0-9]*/stat")) if text]
    prometheus = [
        int(fields[0])
        for fields in (text.split() for text in children)
        if fields[1] == "(prometheus)" and int(fields[3]) == up.process.pid
    ]
    assert len(prometheus) == 1, prometheus
    os.kill(prometheus[0], signal.SIGKILL)
    wait_until(lambda: "Prometheus exited" in up.output(), timeout=15, what="the report of Prometheus' exit")
    assert "ingest and the API go on" in up.output()
    assert up.get("/healthz") == (200, b'{"status":"ok"}')
    assert up.stop(signal.SIGINT) == 0, up.output()


@pytest.mark.parametrize("name", ["d#x", "d?q=1"])
def test_a_data_dir_the_engine_cannot_name_is_refused_before_anything_is_made_or_started(
    tmp_path: Path, name: str
) -> None:
    # It was refused only after the broker had started (on its port) and the secrets and the API key were
    # written into the new folder.
    data_dir = tmp_path / name
    ports = [f"--{port}-port={free_port()}" for port in ("mqtt", "api", "metrics")]
    done = run_eventpipe("up", "--data-dir", str(data_dir), *ports, "--prometheus-port=0", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "holds '?' or '#'" in done.stderr and "--data-dir, or EVENTPIPE_DATA_DIR" in done.stderr
    assert "mosquitto" not in done.stderr and "Traceback" not in done.stderr
    assert not data_dir.exists()


def test_a_chdb_dsn_whose_store_another_process_holds_is_refused_saying_one_process_may_open_it(
    tmp_path: Path,
) -> None:
    # The error ended in the engine's "Error initializing EmbeddedServer: . (BAD_ARGUMENTS)", its cause only on
    # the engine's own stderr line.
    dsn = f"chdb://{tmp_path / 'store'}"
    opener = (
        "import sys, time\nfrom eventpipe.store.client import connect\n"
        "client = connect(sys.argv[1])\nclient.command('SELECT 1')\nprint('open', flush=True)\ntime.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", opener, dsn], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        done = run_eventpipe("migrate", env={**os.environ, "EVENTPIPE_CLICKHOUSE_DSN": dsn}, timeout=60)
    finally:
        holder.kill()
        holder.wait(10)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()[-1]
    assert "(EVENTPIPE_CLICKHOUSE_DSN)" in said and "one process at a time may open an embedded store" in said, said
    assert "Traceback" not in done.stderr


def test_a_chdb_dsn_naming_a_running_up_s_store_is_refused_by_its_data_dir_s_lock(
    tmp_path: Path, stacks: list[Up]
) -> None:
    # The data dir's lock refused these only when EVENTPIPE_DATA_DIR named the same dir: a DSN into another
    # data dir's store met the engine's lock, an error that named neither `eventpipe up` nor its pid.
    first = start(stacks, tmp_path / "data")
    dsn = f"chdb://{(first.data_dir / 'clickhouse').resolve()}"
    env = {**os.environ, "EVENTPIPE_CLICKHOUSE_DSN": dsn, "EVENTPIPE_DATA_DIR": str(tmp_path / "other")}
    held = f"{first.data_dir.resolve()} is in use by `eventpipe up` (pid {first.process.pid}): stop it"
    for args in (["migrate"], ["restore", "--backup", "20990101T000000Z-abcdef"]):
        done = run_eventpipe(*args, env=env, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert held in done.stderr, done.stderr
    done = run_eventpipe("restore", "--clickhouse-dsn", dsn, "--backup", "20990101T000000Z-abcdef", timeout=60)
    assert done.returncode == 2 and held in done.stderr, done.stderr
    assert not (tmp_path / "other").exists()
    assert first.stop() == 0


def test_a_chdb_dsn_the_engine_gives_its_own_cause_for_blames_no_other_process(tmp_path: Path) -> None:
    # Every failure to open an embedded store ended in "one process at a time may open an embedded store: is
    # `eventpipe up` ... running on it?", also a file where the store's folder goes, which no process holds.
    taken = tmp_path / "store"
    taken.write_text("not a folder")
    done = run_eventpipe("migrate", env={**os.environ, "EVENTPIPE_CLICKHOUSE_DSN": f"chdb://{taken}"}, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()
    assert "(EVENTPIPE_CLICKHOUSE_DSN)" in said[0] and "File exists" in said[0], said
    # Its 30-odd lines of stack trace, and the engine options the driver wrote after the path, are not said.
    assert len(said) == 1 and "Stack trace" not in said[0] and f"at '{taken}':" in said[0], said
    assert "one process at a time" not in done.stderr, done.stderr


def test_a_data_dir_lock_a_chdb_dsn_leads_to_and_that_cannot_be_written_names_the_dsn(tmp_path: Path) -> None:
    # Taken for a DSN into an `up` data dir's store, a lock that could not be written blamed "--data-dir, or
    # EVENTPIPE_DATA_DIR", neither of which had named that dir.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / ".lock").symlink_to("/sys/kernel/uevent_seqnum")  # a file, that not even root may write
    dsn = f"chdb://{data_dir / 'clickhouse'}"
    outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    env = {**outside, "EVENTPIPE_CLICKHOUSE_DSN": dsn, "EVENTPIPE_DATA_DIR": str(tmp_path / "other")}
    for args, setting in (
        (["migrate"], "EVENTPIPE_CLICKHOUSE_DSN"),
        (["restore", "--backup", "20990101T000000Z-abcdef"], "EVENTPIPE_CLICKHOUSE_DSN"),
        (["restore", "--clickhouse-dsn", dsn, "--backup", "20990101T000000Z-abcdef"], "--clickhouse-dsn"),
    ):
        done = run_eventpipe(*args, env=env, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        said = done.stderr.strip().splitlines()[-1]
        assert f"cannot write in the data dir {data_dir}: Permission denied ({setting})" in said, said
        assert "EVENTPIPE_DATA_DIR" not in said and "Traceback" not in done.stderr, done.stderr


def test_a_chdb_dsn_whose_data_dir_cannot_be_looked_into_is_refused_naming_it_without_a_traceback(
    tmp_path: Path,
) -> None:
    # Looking for an `up` data dir's lock beside the store, a path the system refuses to look at (a name too
    # long here; a folder this user may not search, likewise) was a traceback, before the DSN's setting was named.
    dsn = f"chdb://{tmp_path / ('d' * 300) / 'clickhouse'}"
    outside = {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}
    for args, env, setting in (
        (["migrate"], {**outside, "EVENTPIPE_CLICKHOUSE_DSN": dsn}, "(EVENTPIPE_CLICKHOUSE_DSN)"),
        (["restore", "--clickhouse-dsn", dsn, "--backup", "20990101T000000Z-abcdef"], outside, "(--clickhouse-dsn)"),
    ):
        done = run_eventpipe(*args, env=env, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and setting in done.stderr, done.stderr[-2000:]
