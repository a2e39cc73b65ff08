"""The signals that stop a command: SIGTERM, SIGINT and SIGHUP, unless SIGHUP is ignored as `nohup` leaves it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# In a child process: the handlers are the process's, and pytest's own must stay as they are.
PROBE = """
import signal, sys
from eventpipe.cli.shutdown import Shutdown
if sys.argv[1] == "nohup":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
Shutdown().install()
print("ignored" if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else "handled")
"""


@pytest.mark.parametrize(("started", "expected"), [("terminal", "handled"), ("nohup", "ignored")])
def test_sighup_stops_a_command_unless_nohup_made_it_outlive_the_terminal(started: str, expected: str) -> None:
    # Since SIGHUP stopped commands cleanly, `nohup eventpipe up &` stopped at logout (found by a review).
    done = subprocess.run([sys.executable, "-c", PROBE, started], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == expected, done.stderr


# Each round: a fresh Shutdown waited on with no pause between polls, and a SIGTERM from another thread at a
# random moment. Before the handler stopped taking locks, a round in a few (thousand, under pytest's load)
# deadlocked the main thread on the Event it waited on: `eventpipe up` hung until killed (seen in CI).
RACE = """
import logging, os, random, signal, sys, threading, time
from eventpipe.cli.shutdown import Shutdown
logging.disable(logging.CRITICAL)
for round in range(int(sys.argv[1])):
    shutdown = Shutdown()
    shutdown.install()
    def send():
        time.sleep(random.uniform(0, 0.002))
        os.kill(os.getpid(), signal.SIGTERM)
    sender = threading.Thread(target=send)
    sender.start()
    assert shutdown.wait(lambda: None, interval=0) is None
    sender.join()
    shutdown.close()
print("stopped", sys.argv[1], "times")
"""


def test_a_stop_signal_at_any_moment_of_the_wait_stops_the_command() -> None:
    try:
        done = subprocess.run([sys.executable, "-c", RACE, "500"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a SIGTERM left the waiting thread hung")
    assert done.stdout.strip() == "stopped 500 times", done.stderr


# The first signal starts the stop; a copy right after it is ignored; one later forces the exit, even when
# on_force fails or stderr takes nothing more (a stalled log collector: the write waited there for good).
FORCE = """
import os, signal, sys, time
from eventpipe.cli.console import setup_logging
from eventpipe.cli.shutdown import Shutdown
setup_logging("INFO")
shutdown = Shutdown()
def force():
    print("forced", flush=True)
    if sys.argv[2] == "on_force fails":
        raise PermissionError("not allowed")
shutdown.on_force = force
shutdown.install()
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGTERM)
assert shutdown.wait(lambda: None) is None
print("stopping", flush=True)
if sys.argv[2] == "stderr full":
    os.set_blocking(2, False)
    try:
        while True:
            os.write(2, b"x" * 4096)
    except BlockingIOError:
        os.set_blocking(2, True)
time.sleep(float(sys.argv[1]))
try:  # as a stop handles what fails in it and goes on
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except Exception as exc:
    print("stop went on past", repr(exc), flush=True)
print("stopped slowly", flush=True)
"""


@pytest.mark.parametrize(
    ("second_after", "case", "outcome"),
    [
        (0.0, "plain", "stopped slowly"),
        (2.5, "plain", "forced"),
        (2.5, "on_force fails", "forced"),
        (2.5, "stderr full", "forced"),
    ],
)
def test_a_second_signal_forces_the_exit_unless_it_came_with_the_first(
    tmp_path: Path, second_after: float, case: str, outcome: str
) -> None:
    # stderr a pipe this test reads only once the child has exited, so the child can fill it.
    child = subprocess.Popen(
        [sys.executable, "-c", FORCE, str(second_after), case],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code = child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"{case}: the second signal did not end the process")
    out, err = child.communicate()
    assert out.splitlines()[-1] == outcome, err[-2000:]
    assert "SIGTERM received: flushing, acknowledging and stopping" in err
    if outcome == "stopped slowly":
        assert code == 0, err[-2000:]
        return
    assert code == 1
    if case != "stderr full":
        assert "ERROR eventpipe: second SIGTERM: exiting now; unacknowledged messages will be redelivered" in err


def test_a_stop_signal_delivered_to_another_thread_wakes_the_wait_at_once() -> None:
    # The kernel may hand a process's signal to any of its threads; Python runs the handler on the main
    # thread only when that one next runs bytecode, which a wait blocked in poll() did after its interval.
    probe = """
import signal, sys, threading, time
from eventpipe.cli.shutdown import Shutdown
shutdown = Shutdown()
shutdown.install()
other = threading.Thread(target=time.sleep, args=(3,))
other.start()
threading.Timer(0.5, signal.pthread_kill, (other.ident, signal.SIGTERM)).start()
started = time.monotonic()
shutdown.wait(lambda: None, interval=60)
print(time.monotonic() - started)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    # Woken by the signal (half a second in), not by the end of the 60 s interval.
    assert float(done.stdout) < 30, done.stderr
