"""`eventpipe bench --quick` as a user runs it: it completes and prints every figure. No timing is asserted:
the figures are for people to read, and this machine is shared."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from eventpipe.port import free_port
from tests.support.stack import eventpipe_command, query, raw_stats, run_eventpipe
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


def test_the_quick_benchmark_runs_every_scenario_and_prints_its_figures(tmp_path: Path) -> None:
    """Run as a user would, with the settings of their own deployment exported. Two runs so found: with the
    DSNs of a user's server exported, the demo events went into that store, then the read scenario failed
    with a traceback (the help and docs promise a chDB of its own); with a session secret exported, the
    drain's worker took it and waited 600 s on a session whose id was not the one its backlog was queued for;
    with a window and a batch of their own exported, the drain's worker got the window alone and refused to
    start, naming EVENTPIPE_BATCH_MAX_ROWS."""
    real = tmp_path / "real"  # stands for the user's server: no process of the bench may create it
    dsn = f"chdb://{real}"
    env = {
        **os.environ,
        "EVENTPIPE_CLICKHOUSE_DSN": dsn,
        "EVENTPIPE_ADMIN_CLICKHOUSE_DSN": dsn,
        "EVENTPIPE_MQTT_SESSION_SECRET": "0123456789abcdef" * 3,
        "EVENTPIPE_MQTT_RECEIVE_MAXIMUM": "10000",
        "EVENTPIPE_BATCH_MAX_ROWS": "5000",
    }
    figures_file = tmp_path / "figures.json"
    args = ("--quick", "--work-dir", str(tmp_path / "work"), "--json", str(figures_file))
    done = run_eventpipe("bench", *args, env=env, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not real.exists(), "the benchmark wrote into the store EVENTPIPE_CLICKHOUSE_DSN names"
    out = done.stdout
    for heading in ("1. Backlog drain", "2. Publish -> queryable", "3. Reads as the store grows", "4. Worker cost"):
        assert heading in out, out
    assert "worker / bare paho:" in out
    assert "p99 at 2,000 msg/s:" in out
    assert "Scale-out" in out
    assert "slowest windowed read" in out and "(filled 60,000 events" in out

    figures = json.loads(figures_file.read_text())
    assert {row["kind"] for row in figures["drain"]} == {"bare", "parse", "worker"}
    assert all(row["count"] == 3_000 and row["seconds"] > 0 for row in figures["drain"])
    assert [row["rate"] for row in figures["latency"]] == [500.0, 2000.0]
    assert all(row["lost"] == 0 and row["latencies"] for row in figures["latency"])
    assert {row["size"] for row in figures["api"]} == {20_000, 60_000}
    reads = {row["name"] for row in figures["api"]}
    assert {"newest page", "one user_id", "last hour", "by id", "types, all time", "total count"} <= reads
    assert all(row["api"] for row in figures["api"] if row["name"] != "total count")
    assert [row["size"] for row in figures["export"]] == [20_000, 60_000]
    assert all(row["events"] > 0 and row["rate"] > 0 for row in figures["export"])
    assert sorted((row["kind"], row["processes"]) for row in figures["scale"]) == [
        ("bare", 1),
        ("bare", 2),
        ("worker", 1),
        ("worker", 2),
    ]
    assert list((tmp_path / "work").iterdir()) == [], "the run's directory is removed unless --keep"


def test_a_json_path_that_cannot_be_written_stops_the_benchmark_before_it_runs(tmp_path: Path) -> None:
    """It was found only after the whole run (an hour by default): a traceback, and the figures lost."""
    figures_file = tmp_path / "no-such-folder" / "figures.json"
    # A broker that cannot start: the run would stop at its first step, so only a check made before
    # the run can name --json (and the test starts no server).
    env = {**os.environ, "EVENTPIPE_MOSQUITTO_BINARY": str(tmp_path / "no-such-broker")}
    args = ("--only", "drain", "--count", "10", "--work-dir", str(tmp_path / "work"), "--json", str(figures_file))
    done = run_eventpipe("bench", *args, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot write the figures to {figures_file} (--json): No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr and "work dir" not in done.stdout, done.stdout + done.stderr
    assert not (tmp_path / "work").exists(), "nothing was started"


def test_fill_keeps_the_retention_the_environment_sets(tmp_path: Path) -> None:
    """`bench fill` migrated with no retention, which removed the TTL `eventpipe up` had set with the
    same EVENTPIPE_RETENTION_DAYS: events then were kept forever."""
    env = {**os.environ, "EVENTPIPE_RETENTION_DAYS": "30"}
    done = run_eventpipe("bench", "fill", "--data-dir", str(tmp_path), "--count", "1000", env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    sql = "SELECT name FROM system.tables WHERE database = currentDatabase() AND create_table_query LIKE '% TTL %'"
    assert "events" in query(tmp_path, sql).split(), "bench fill removed the retention TTL"


def test_every_latency_run_publishes_events_never_published_before(tmp_path: Path) -> None:
    """Ids were seeded by the rate: `--rates 500,500` published the same events twice, and the second
    run's samples, already stored, were found at once (p50 65 ms against 374 ms)."""
    work = tmp_path / "work"
    args = ("--quick", "--only", "latency", "--rates", "500,500", "--latency-seconds", "1", "--keep")
    done = run_eventpipe("bench", *args, "--work-dir", str(work), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = work.iterdir()
    # The warm-up's 300 events (200/s for 1.5 s), then 1,000 per run (500/s for 1 s quiet, 1 s polled).
    assert raw_stats(run / "up")[1] == 300 + 2 * 1_000


def _running_in(directory: Path) -> list[int]:
    """The processes whose command line names `directory`: what a run left behind there."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        if str(directory) in text:
            found.append(int(cmdline.parent.name))
    return found


def test_sigterm_stops_the_benchmark_with_the_stack_it_started(tmp_path: Path) -> None:
    """SIGTERM (scripts/ab.sh, CI time limits) left `eventpipe up` and its Mosquitto running, reparented
    to PID 1, and the work dir behind; Ctrl-C cleaned up."""
    work = tmp_path / "work"
    args = ("--quick", "--only", "latency", "--rates", "500", "--latency-seconds", "60", "--work-dir", str(work))
    bench = subprocess.Popen(
        [*eventpipe_command(), "bench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: any("eventpipe ready" in log.read_text() for log in work.glob("*/up-up.log")), 90)
        bench.send_signal(signal.SIGTERM)
        out, err = bench.communicate(timeout=90)
        assert bench.returncode == 130 and "eventpipe bench: interrupted" in err, out + err
        assert "Traceback" not in err, err
        wait_until(lambda: not _running_in(work), 10)
        assert list(work.iterdir()) == [], "the run's directory is removed"
    finally:
        bench.kill()
        for pid in _running_in(work):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_benchmark_leaves_no_stack_running(tmp_path: Path) -> None:
    """Killed outright (kill -9, the OOM killer), the bench cannot clean up; its `eventpipe up` stops with
    it all the same (the kernel's parent-death signal), and with it its broker."""
    work = tmp_path / "work"
    args = ("--quick", "--only", "latency", "--rates", "500", "--latency-seconds", "60", "--work-dir", str(work))
    bench = subprocess.Popen([*eventpipe_command(), "bench", *args], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: any("eventpipe ready" in log.read_text() for log in work.glob("*/up-up.log")), 90)
        bench.kill()
        bench.wait()
        wait_until(lambda: not _running_in(work), 60, what="the bench's `eventpipe up` and broker to stop")
    finally:
        for pid in _running_in(work):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signals", [1, 5])
def test_sigterm_stops_fill_between_batches(tmp_path: Path, signals: int) -> None:
    """SIGTERM killed `bench fill` inside an insert: events_by_user could be left short of the events
    `events` took (750,000 of 1,000,000), so a user's pages missed events served by id. Its inserts run
    on threads now: more signals while it waits for them must not cut them either."""
    fill = subprocess.Popen(
        [*eventpipe_command(), "bench", "fill", "--data-dir", str(tmp_path), "--count", "5000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (tmp_path / "clickhouse").is_dir(), 60)
        time.sleep(6)  # into the batches: each takes a second or two here
        for _ in range(signals):
            fill.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        out, err = fill.communicate(timeout=60)
    finally:
        fill.kill()
    # Signals after the inserts have ended find the default action back, and may end it so: not a cut insert.
    assert fill.returncode in ((130,) if signals == 1 else (130, -signal.SIGTERM)), out + err
    assert "eventpipe bench: interrupted" in err, out + err
    events, by_user = query(
        tmp_path, "SELECT (SELECT count() FROM events), (SELECT count() FROM events_by_user)"
    ).split()
    assert int(events) > 0 and events == by_user


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        pytest.param(("bench", "fill", "--count", "10", "--data-dir"), "--data-dir", id="fill"),
        pytest.param(("bench", "--only", "drain", "--count", "10", "--work-dir"), "--work-dir", id="bench"),
    ],
)
def test_a_directory_flag_naming_a_file_is_one_line_naming_it(tmp_path: Path, args: tuple[str, ...], flag: str) -> None:
    """`bench fill --data-dir FILE` printed the engine's 37-line traceback, `bench --work-dir FILE` a
    FileExistsError traceback."""
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    done = run_eventpipe(*args, str(afile), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and f"{afile}: File exists ({flag})" in done.stderr, done.stderr
    assert afile.read_text() == "mine\n"


def test_fill_locks_a_data_dir_it_makes(tmp_path: Path) -> None:
    """On a data dir that did not exist yet, `bench fill` took no lock: an `eventpipe up` started
    meanwhile failed with chDB's own "Cannot lock file …/status"."""
    data_dir = tmp_path / "new"
    fill = subprocess.Popen(
        [*eventpipe_command(), "bench", "fill", "--data-dir", str(data_dir), "--count", "20000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (data_dir / "clickhouse").is_dir(), 60)
        ports = ("--mqtt-port", str(free_port()), "--api-port", str(free_port()), "--metrics-port", str(free_port()))
        done = run_eventpipe("up", "--data-dir", str(data_dir), *ports, "--prometheus-port", "0", timeout=60)
        assert fill.poll() is None, "the fill ran all along"
    finally:
        fill.send_signal(signal.SIGTERM)
        fill.wait(60)
    assert done.returncode == 2, done.stdout + done.stderr
    said = "is in use by `eventpipe bench fill` (pid {}): wait for it to end, or pass another --data-dir"
    assert said.format(fill.pid) in done.stderr and "Traceback" not in done.stderr, done.stderr
