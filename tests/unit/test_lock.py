"""One `eventpipe up` per data dir: a second is refused, naming the dir, until the first and its children are gone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventpipe.errors import ConfigError
from eventpipe.stack.lock import hold, stopped


def test_a_second_holder_waits_then_is_refused_naming_the_data_dir_and_the_first(tmp_path: Path) -> None:
    first = hold(tmp_path)
    try:
        started = time.monotonic()
        said = rf"^{re.escape(str(tmp_path.resolve()))} is in use by `eventpipe up` \(pid {os.getpid()}\): stop it"
        with pytest.raises(ConfigError, match=said + r" \(Ctrl-C or SIGTERM\), or pass another --data-dir$"):
            hold(tmp_path, wait_s=0.3)
        assert time.monotonic() - started >= 0.3
    finally:
        first.close()
    hold(tmp_path, wait_s=0).close()


def test_a_child_that_inherits_the_lock_keeps_the_data_dir_taken_until_it_is_gone(tmp_path: Path) -> None:
    # As the broker and Prometheus do: after `up` dies, its orphans still use the files.
    first = hold(tmp_path)
    child = subprocess.Popen(["sleep", "60"], pass_fds=(first.fileno(),))
    try:
        first.close()
        with pytest.raises(ConfigError):
            hold(tmp_path, wait_s=0.2)
    finally:
        child.kill()
        child.wait()
    hold(tmp_path, wait_s=0).close()


def test_a_restore_holding_the_data_dir_is_named_and_waited_for_not_stopped(tmp_path: Path) -> None:
    # It was refused as "in use by a running `eventpipe up` ...: stop it": an operator who found no `up`
    # running could stop the restore, which leaves the store refused until it is run again.
    restoring = stopped(tmp_path, "then restore", "restore")
    try:
        named = f"{tmp_path.resolve()} is in use by `eventpipe restore` (pid {os.getpid()}): wait for it to end"
        with pytest.raises(ConfigError, match=re.escape(named) + ", or pass another --data-dir$"):
            hold(tmp_path, wait_s=0)
        with pytest.raises(ConfigError, match=re.escape(named) + ", then fill it$"):
            stopped(tmp_path, "then fill it", "fill")
    finally:
        restoring.close()
    stopped(tmp_path, "then fill it", "fill").close()


def test_what_a_holder_that_died_left_running_is_named_as_such(tmp_path: Path) -> None:
    # An `up` killed with -9 leaves its broker and Prometheus holding the lock they inherited.
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; from pathlib import Path; from eventpipe.stack.lock import hold; "
            "handle = hold(Path(sys.argv[1])); "
            "print(subprocess.Popen(['sleep', '60'], pass_fds=(handle.fileno(),), stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL).pid)",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    orphan = int(started.stdout)
    try:
        with pytest.raises(
            ConfigError,
            match=r"is in use by what `eventpipe up` \(pid \d+, gone\) started: wait for it to end \(a broker",
        ):
            hold(tmp_path, wait_s=0)
    finally:
        os.kill(orphan, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            hold(tmp_path, wait_s=0).close()
            break
        except ConfigError:
            assert time.monotonic() < deadline, "the orphan's lock outlived it"
            time.sleep(0.05)


def test_a_holders_number_handed_on_to_another_process_is_not_taken_for_the_holder(tmp_path: Path) -> None:
    # The pid alone named whatever process the kernel gave the number to next as the `up` to stop.
    held = hold(tmp_path)
    try:
        (tmp_path / ".lock").write_text(f"up {os.getpid()} 1\n")  # this pid, but started at another time
        with pytest.raises(ConfigError, match=rf"what `eventpipe up` \(pid {os.getpid()}, gone\) started"):
            hold(tmp_path, wait_s=0)
    finally:
        held.close()


def test_a_data_dir_the_lock_cannot_be_written_in_is_refused_naming_the_setting(tmp_path: Path) -> None:
    # /sys/kernel or /proc gave a raw PermissionError or FileNotFoundError traceback.
    missing = tmp_path / "gone"
    for take in (hold, lambda path: stopped(path, "then restore", "restore")):
        with pytest.raises(ConfigError, match=r"cannot write in the data dir .*gone.*EVENTPIPE_DATA_DIR"):
            take(missing)
