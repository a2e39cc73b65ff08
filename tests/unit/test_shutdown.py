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
