"""One `eventpipe up` per data dir: chDB and the broker's files allow one user."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import TextIO

from eventpipe.errors import ConfigError
from eventpipe.process import running_since
from eventpipe.store.client import embedded_path
from eventpipe.store.dsn import EMBEDDED_STORE

log = logging.getLogger(__name__)
FILE_NAME = ".lock"
# Who may hold the lock: `up`, or a single-purpose command on the data dir's store (cli.service).
OTHERS = "(or an eventpipe worker, api, migrate, restore or bench fill on its store)"
# Each holder writes its name, pid and start in the file, so that a refusal names it: a restore's lock was
# refused as "in use by a running `eventpipe up` ...: stop it", and an operator who found no `up` could
# have stopped the restore. Those that serve are stopped; those that end by themselves are waited for.
STOP, WAIT = "stop it (Ctrl-C or SIGTERM)", "wait for it to end"
HOLDERS = {
    "up": ("`eventpipe up`", STOP),
    "api": ("`eventpipe api` on its store", STOP),
    "worker": ("`eventpipe worker` on its store", STOP),
    "migrate": ("`eventpipe migrate` on its store", WAIT),
    "restore": ("`eventpipe restore`", WAIT),
    "fill": ("`eventpipe bench fill`", WAIT),
}
# What names a data dir, unless a chdb:// DSN into its store did (data_dir_of).
DATA_DIR_SETTING = "--data-dir, or EVENTPIPE_DATA_DIR"
# A holder's line is a name, a pid and a start: more is no line of ours.
MOST_READ = 64


def data_dir_of(dsn: str) -> Path | None:
    """The data dir that `eventpipe up` has used whose store a chdb:// DSN names (its lock file is there), else
    None: a command given that DSN takes the dir's lock, or it met the engine's own lock beside a running `up`,
    an error that named no one."""
    path = embedded_path(dsn)
    if path is None or path.name != EMBEDDED_STORE:
        return None
    try:
        found = (path.parent / FILE_NAME).is_file()
    except OSError:
        # A folder this user may not search, a name too long: what opens the store says so, naming the DSN's
        # setting, where this was a traceback.
        return None
    return path.parent if found else None


def made(data_dir: Path, setting: str) -> None:
    """`data_dir` made if it is not there, or a ConfigError naming `setting`: a regular file there was the
    engine's 37-line traceback."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the data dir {data_dir}: {exc.strerror} ({setting})") from None


def hold(data_dir: Path, wait_s: float = 10.0) -> TextIO:
    """An exclusive lock on `data_dir` for `eventpipe up`, held until the returned file and every child that
    inherits it close.

    The children inherit it, so after a crash it is free only once they are
    gone too; a restart right after waits that long for them.
    """
    handle = _opened(data_dir)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _claimed(handle, "up")
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise ConfigError(
                    _refusal(data_dir, "another `eventpipe up`", "stop it", "or pass another --data-dir")
                ) from None
            time.sleep(0.1)


def stopped(data_dir: Path, then: str, holder: str, setting: str = DATA_DIR_SETTING) -> TextIO:
    """The lock of a data dir no `eventpipe up` runs on, held by `holder` (a key of HOLDERS) until the
    returned file closes, for a command that must not run beside one (chDB lets one process open a store);
    refused at once, saying `then`. `setting`: what named the data dir, said when its lock cannot be written."""
    handle = _opened(data_dir, setting)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(_refusal(data_dir, "a running `eventpipe up`", "stop it (Ctrl-C or SIGTERM)", then)) from None
    return _claimed(handle, holder)


def alone(data_dir: Path, setting: str, then: str, holder: str) -> contextlib.closing[TextIO]:
    """`data_dir`, made if need be, locked while a command works on its store beside no other (`stopped`):
    made first, so that an `eventpipe up` started meanwhile is refused too."""
    made(data_dir, setting)
    return contextlib.closing(stopped(data_dir, then, holder, setting))


def _claimed(handle: TextIO, holder: str) -> TextIO:
    """`handle`, locked, with `holder`, this pid and its start written in its file for those refused meanwhile."""
    pid = os.getpid()
    try:
        # Past the file object's buffer, which would try again (and fail again) at close.
        os.ftruncate(handle.fileno(), 0)
        os.pwrite(handle.fileno(), f"{holder} {pid} {running_since(pid)}\n".encode(), 0)
    except OSError as exc:
        # A full disk: the lock is held all the same, and a refusal names no holder.
        log.debug("cannot write the holder of %s: %s", handle.name, exc.strerror)
    return handle


def _refusal(data_dir: Path, unnamed: str, stop: str, then: str) -> str:
    """Why `data_dir` is refused: its holder as its file names it, or `unnamed` and what else may hold it
    (a file written before holders wrote theirs, or one a holder has not written yet)."""
    try:
        with (data_dir / FILE_NAME).open("rb") as file:
            name, pid, start = [*file.read(MOST_READ).decode(errors="replace").split(), "", "", ""][:3]
    except OSError:
        name, pid, start = "", "", ""
    if name not in HOLDERS or not pid.isdigit():
        return f"{data_dir.resolve()} is in use by {unnamed} {OTHERS}: {stop}, {then}"
    holder, advice = HOLDERS[name]
    since = running_since(int(pid))
    if since is None or (start.isdigit() and since not in (0, int(start))):
        # Exited (or its number handed on): its children inherit the lock, such as the broker of an `up`
        # killed with -9, which the death signal has asked to stop, and which may be saving its queue.
        return (
            f"{data_dir.resolve()} is in use by what {holder} (pid {pid}, gone) started: wait for it to end "
            f"(a broker may be saving its queue) or stop it, {then}"
        )
    return f"{data_dir.resolve()} is in use by {holder} (pid {pid}): {advice}, {then}"


def _opened(data_dir: Path, setting: str = DATA_DIR_SETTING) -> TextIO:
    """The lock file, or a ConfigError naming the data dir and `setting`, which named it: one not writable
    was a raw traceback. Opened without emptying it: its holder's line is for those refused."""
    try:
        # Neither emptied nor appended to (a holder writes its line from the start).
        return os.fdopen(os.open(data_dir / FILE_NAME, os.O_WRONLY | os.O_CREAT, 0o666), "w")
    except OSError as exc:
        raise ConfigError(f"cannot write in the data dir {data_dir}: {exc.strerror} ({setting})") from None
