"""Children of `eventpipe up` (Mosquitto, Prometheus) are signalled by process group, and only their own."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

from eventpipe.port import free_port
from eventpipe.stack.child import ChildProcess, group_alive

# Listens on the port it is given, then exits a moment later, as a crashing broker would.
SHORT_LIVED = """
import socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
time.sleep(1)
"""


def test_a_child_that_exited_keeps_its_number_until_stopped(tmp_path: Path) -> None:
    # Its pid is its process group's id, and stop() signals that group: reaped as soon as it was seen gone
    # (by the health check, hours before shutdown), the number could be another program's group by then,
    # which got SIGTERM and, 10 s later, SIGKILL.
    port = free_port()
    child = ChildProcess("short", port, tmp_path)
    assert child.start([sys.executable, "-c", SHORT_LIVED, str(port)]) is None
    assert child._process is not None
    pid = child._process.pid
    deadline = time.monotonic() + 10
    while child.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.running() and child.returncode == 0
    assert (Path("/proc") / str(pid) / "stat").read_text().split(") ")[1][0] == "Z", "kept, not reaped"
    child.stop()
    assert not (Path("/proc") / str(pid)).exists(), "reaped by stop()"
    child.terminate()  # no group left to signal: nothing happens, nothing raises


def test_a_program_that_exits_at_start_leaves_nothing_it_started(tmp_path: Path) -> None:
    # Reaped by the start's own check, its group was no longer signalled: what it had started ran on.
    child = ChildProcess("quitter", free_port(), tmp_path)
    why = child.start(["sh", "-c", "sleep 300 & exit 3"])
    assert why is not None and why.startswith("quitter exited at start")
    assert child._process is not None
    assert not group_alive(child._process.pid), "the sleep it started was left running"


def test_a_program_that_wrote_gigabytes_before_it_failed_is_explained_by_its_last_lines(tmp_path: Path) -> None:
    # The reason is at the end; the whole file was read to find it, into memory.
    child = ChildProcess("chatty", free_port(), tmp_path)
    script = "import sys; sys.stderr.write('noise\\n' * 4_000_000 + 'the reason\\n'); sys.exit(4)"
    tracemalloc.start()
    try:
        why = child.start([sys.executable, "-c", script])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert why is not None and why.endswith("noise | noise | noise | noise | the reason")
    assert (tmp_path / "chatty.stderr").stat().st_size > 20_000_000
    assert peak < 2_000_000, f"{peak:,} bytes held to explain it"


# Listens; on SIGTERM writes a file bit by bit for about 3 s, as a broker saving a large queue does, then exits.
SLOW_SAVER = """
import signal, socket, sys, time
def save(*_):
    with open(sys.argv[2], "wb") as out:
        for _ in range(30):
            out.write(b"x" * 1000)
            out.flush()
            time.sleep(0.1)
    sys.exit(0)
signal.signal(signal.SIGTERM, save)  # before it listens: stop() may come as soon as it does
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
time.sleep(300)
"""


def test_a_child_saving_on_stop_is_waited_for_while_its_save_grows_and_killed_once_it_stops_growing(
    tmp_path: Path,
) -> None:
    # Mosquitto saving gigabytes of queued messages was killed 10 s into its save on a clean stop, leaving
    # its new file half written: it came back from its last autosave.
    port, saved = free_port(), tmp_path / "saved"
    child = ChildProcess("saver", port, tmp_path)
    assert child.start([sys.executable, "-c", SLOW_SAVER, str(port), str(saved)]) is None
    # A tick of its save is 0.1 s; on a loaded machine, several.
    child.stop(timeout=3.0, busy=lambda: saved.stat().st_size < 30_000)
    assert child.returncode == 0, "killed while its save grew"
    assert saved.stat().st_size == 30_000
    # The same save with nothing watched: killed after the timeout (before its 3 s are up).
    child = ChildProcess("saver", port, tmp_path)
    assert child.start([sys.executable, "-c", SLOW_SAVER, str(port), str(saved)]) is None
    started = time.monotonic()
    child.stop(timeout=1.0)
    assert child.returncode == -9 and time.monotonic() - started < 2.9


def test_a_stop_whose_watch_fails_still_stops_the_child(tmp_path: Path) -> None:
    # The file watched is renamed away at the end of every save: a stat that failed then escaped stop(),
    # leaving the broker running, unreaped, and `up` ending in a traceback.
    port = free_port()
    child = ChildProcess("saver", port, tmp_path)
    assert child.start([sys.executable, "-c", SLOW_SAVER, str(port), str(tmp_path / "saved")]) is None

    def renamed_away() -> bool:
        raise FileNotFoundError(2, "No such file or directory", "mosquitto.db.new")

    child.stop(timeout=1.0, busy=renamed_away)
    assert not child.running() and child.returncode == -9
