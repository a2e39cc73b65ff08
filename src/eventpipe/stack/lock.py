"""One `eventpipe up` per data dir: chDB and the broker's files allow one user."""

from __future__ import annotations

import contextlib
import fcntl
import time
from pathlib import Path
from typing import Literal, TextIO

from eventpipe.errors import ConfigError

FILE_NAME = ".lock"
# Who may hold the lock: `up`, or a single-purpose command on the data dir's store (cli.service).
OTHERS = "(or an eventpipe worker, api or migrate on its store)"


def made(data_dir: Path, setting: str) -> None:
    """`data_dir` made if it is not there, or a ConfigError naming `setting`: a regular file there was the
    engine's 37-line traceback."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the data dir {data_dir}: {exc.strerror} ({setting})") from None


def hold(data_dir: Path, wait_s: float = 10.0) -> TextIO:
    """An exclusive lock on `data_dir`, held until the returned file and every child that inherits it close.

    The children inherit it, so after a crash it is free only once they are
    gone too; a restart right after waits that long for them.
    """
    handle = _opened(data_dir, "w")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise ConfigError(
                    f"{data_dir.resolve()} is in use by another `eventpipe up` {OTHERS}: stop it, or pass another "
                    "--data-dir"
                ) from None
            time.sleep(0.1)


def stopped(data_dir: Path, then: str) -> TextIO:
    """The lock of a data dir no `eventpipe up` runs on, held until the returned file closes, for a command
    that must not run beside one (chDB lets one process open a store); refused at once, saying `then`."""
    handle = _opened(data_dir, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"{data_dir.resolve()} is in use by a running `eventpipe up` {OTHERS}: stop it (Ctrl-C or SIGTERM), {then}"
        ) from None
    return handle


def alone(data_dir: Path, setting: str, then: str) -> contextlib.closing[TextIO]:
    """`data_dir`, made if need be, locked while a command works on its store beside no other (`stopped`):
    made first, so that an `eventpipe up` started meanwhile is refused too."""
    made(data_dir, setting)
    return contextlib.closing(stopped(data_dir, then))


def _opened(data_dir: Path, mode: Literal["w", "a"]) -> TextIO:
    """The lock file, or a ConfigError naming the data dir: one not writable was a raw traceback."""
    try:
        return (data_dir / FILE_NAME).open(mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot write in the data dir {data_dir}: {exc.strerror} (--data-dir, or EVENTPIPE_DATA_DIR)"
        ) from None
