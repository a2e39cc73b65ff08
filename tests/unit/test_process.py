"""This process's file limit and the signals that interrupt it (eventpipe.process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from eventpipe.process import interrupted_by

RAISE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from eventpipe.process import raise_file_limit
print(raise_file_limit())
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("soft", "hard", "after", "warned"),
    [(256, 4096, 1024, False), (256, 512, 512, True), (1024, 1024, 1024, False), (2048, 4096, 2048, False)],
    ids=["raised to 1,024", "still short: warned", "enough already", "higher: left as it is"],
)
def test_a_server_takes_the_files_it_needs_and_no_more(soft: int, hard: int, after: int, warned: bool) -> None:
    # `eventpipe up` under a soft limit of 256 ran out of files under load (and under 64 failed at start),
    # though the hard limit allowed far more. Past 1,024, paho's select() cannot watch the worker's socket.
    done = subprocess.run(
        [sys.executable, "-c", RAISE, str(soft), str(hard)], capture_output=True, text=True, check=True
    )
    warning, limit = done.stdout.splitlines()
    assert int(limit) == after
    assert ("ulimit -n 1024" in warning) is warned, warning


def test_a_signal_at_its_default_interrupts_the_block_and_an_ignored_one_stays_ignored() -> None:
    # Under nohup a terminal's hang-up is ignored: a restore that took it as Ctrl-C stopped after its drop.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupted_by(signal.SIGHUP, signal.SIGUSR1):
            os.kill(os.getpid(), signal.SIGHUP)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGUSR1)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
