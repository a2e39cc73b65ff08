"""One `eventpipe up` per data dir: a second is refused, naming the dir, until the first and its children are gone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from eventpipe.errors import ConfigError
from eventpipe.stack.lock import hold, stopped


def test_a_second_holder_waits_then_is_refused_naming_the_data_dir(tmp_path: Path) -> None:
    first = hold(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=f"{tmp_path.resolve()} is in use by another `eventpipe up`"):
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


def test_a_data_dir_the_lock_cannot_be_written_in_is_refused_naming_the_setting(tmp_path: Path) -> None:
    # /sys/kernel or /proc gave a raw PermissionError or FileNotFoundError traceback.
    missing = tmp_path / "gone"
    for take in (hold, lambda path: stopped(path, "then restore")):
        with pytest.raises(ConfigError, match=r"cannot write in the data dir .*gone.*EVENTPIPE_DATA_DIR"):
            take(missing)
