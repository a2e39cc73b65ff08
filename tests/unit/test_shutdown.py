"""The signals that stop a command: SIGTERM, SIGINT and SIGHUP, unless SIGHUP is ignored as `nohup` leaves it."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a child process: the handlers are the process's, and pytest's own must stay as they are.
PROBE = """
import signal, sys
from eventpipe.cli.runtime import Shutdown
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
from eventpipe.cli.runtime import Shutdown
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


# The first signal starts the stop; a copy right after it is ignored; one later forces the exit.
FORCE = """
import os, signal, sys, time
from eventpipe.cli.runtime import Shutdown, setup_logging
setup_logging("INFO")
shutdown = Shutdown()
shutdown.on_force = lambda: print("forced", flush=True)
shutdown.install()
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGTERM)
assert shutdown.wait(lambda: None) is None
print("stopping", flush=True)
time.sleep(float(sys.argv[1]))
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(5)
print("stopped slowly", flush=True)
"""


@pytest.mark.parametrize(("second_after", "outcome"), [(0.0, "stopped slowly"), (2.5, "forced")])
def test_a_second_signal_forces_the_exit_unless_it_came_with_the_first(second_after: float, outcome: str) -> None:
    done = subprocess.run([sys.executable, "-c", FORCE, str(second_after)], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == outcome, done.stderr
    assert "SIGTERM received: flushing, acknowledging and stopping" in done.stderr
    if outcome == "forced":
        assert done.returncode == 1
        assert (
            "ERROR eventpipe: second SIGTERM: exiting now; unacknowledged messages will be redelivered" in done.stderr
        )
    else:
        assert done.returncode == 0, done.stderr
