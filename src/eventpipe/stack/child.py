"""Child processes of `eventpipe up` (Mosquitto, Prometheus): started, watched, stopped by process group."""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from eventpipe.process import processes, raised_soft
from eventpipe.stack import tail

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
# What an error message reads of a child's stderr or log: the end, where the reason is.
TAIL_BYTES = 64 * 1024
# The longest a stop waits for a child that shows progress: a broker saving gigabytes of queued messages
# on a slow disk, killed at 10 s, left its new file half written and came back from its last autosave.
MOST_STOP_S = 600.0


class ChildProcess:
    """One program listening on 127.0.0.1:port, its stderr and log files under `directory`."""

    def __init__(self, name: str, port: int, directory: Path, log_file: Path | None = None) -> None:
        self.name = name
        self.port = port
        self.directory = directory
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(
        self,
        argv: Sequence[str],
        timeout: float = 15.0,
        inherit_fds: tuple[int, ...] = (),
        unrunnable: str = "",
        files: int = 0,
    ) -> str | None:
        """Start it and wait until it listens; return None, or why it did not come up.

        `inherit_fds` stay open in the child (the data-dir lock), so they are
        held until the child itself is gone. `unrunnable` is added to the reason when the binary is
        there but cannot be run (a #! naming a missing interpreter: ENOENT; no executable format: ENOEXEC),
        which was a Popen traceback. `files` raises the child's soft file limit that far, as its hard limit
        allows, above the one it inherits from this process.
        """
        stderr_path = self.directory / f"{self.name}.stderr"
        offset = self.log_file.stat().st_size if self.log_file and self.log_file.exists() else 0
        # A file never fills up and blocks the child the way an unread pipe would.
        with stderr_path.open("wb") as stderr:
            try:
                self._process = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    preexec_fn=parent_death_signal(),
                    pass_fds=inherit_fds,
                    # Its own session: Ctrl-C or a supervisor's signal to our process
                    # group must not stop the broker before the worker has acked. We
                    # stop children ourselves, in order; the death signal covers crashes.
                    start_new_session=True,
                )
            except OSError as exc:
                return f"cannot run {argv[0]}: {exc.strerror}{unrunnable}"
        if files:
            raise_files(self._process.pid, files)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._exit() is not None:  # not reaped: stop() must still reach its group
                self.stop()  # what a wrapper script started may outlive it
                return f"{self.name} exited at start: {self._explain(stderr_path, offset)}"
            if accepts(self.port):
                log.info("%s %d listening on 127.0.0.1:%d", self.name, self._process.pid, self.port)
                return None
            time.sleep(0.05)
        self.stop()
        why = self._explain(stderr_path, offset)
        return f"{self.name} did not listen on port {self.port} within {timeout:.0f}s: {why}"

    def running(self) -> bool:
        return self._process is not None and self._exit() is None

    @property
    def returncode(self) -> int | None:
        """How it exited (minus the signal that killed it), None while it runs or before it started."""
        return self._exit() if self._process is not None else None

    def send(self, signum: int) -> None:
        """Send it `signum`, if it still runs."""
        if self.running():
            self._signal(signum)

    def terminate(self) -> None:
        """Ask it to stop without waiting."""
        self._signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0, busy: Callable[[], bool] | None = None) -> None:
        """SIGTERM (Mosquitto and Prometheus save their state on it), then wait; SIGKILL if it hangs.

        Waits for its whole process group, even when the program itself has exited: a wrapper script
        killed by a signal leaves what it started behind, holding the port and the data dir's lock.
        `busy`, asked at each tick, says whether it is still at work (Mosquitto: a save under way): the
        `timeout` counts from the last tick it was, up to MOST_STOP_S in all.
        """
        if not self._signal(signal.SIGTERM):
            return
        assert self._process is not None
        started = time.monotonic()
        deadline, said = started + timeout, False
        while self._exit() is None or group_alive(self._process.pid):
            now = time.monotonic()
            if _asked(busy):
                deadline = min(now + timeout, started + MOST_STOP_S)
                if not said and now - started > timeout:
                    log.info("%s is still saving after %.0fs; waiting while it goes on", self.name, now - started)
                    said = True
            if now > deadline:
                log.error("%s did not stop within %.0fs; killing it", self.name, now - started)
                self._signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        self._process.wait()

    def _exit(self) -> int | None:
        """Its exit status (minus a killing signal) once it has exited, without reaping it: its pid, which
        is its group's id, stays its own until stop() reaps it, so a signal to the group never reaches
        another program's group that was handed the number meanwhile."""
        assert self._process is not None
        if self._process.returncode is not None or not hasattr(os, "waitid"):  # macOS has no os.waitid
            return self._process.poll()
        try:
            info = os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by someone else's wait
            return self._process.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _signal(self, signum: int) -> bool:
        """Send `signum` to every process in its group; False when there is no group to signal.

        The group, not the pid: a binary that is a wrapper script without `exec` is a shell whose
        child is the real program, which a signal to the shell alone never reaches. Never once it is
        reaped: its number may then be another group's.
        """
        if self._process is None or self._process.returncode is not None:
            return False
        try:
            # It leads its own session (start_new_session), so its pid is its group's id.
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def explain_stderr(self) -> str:
        """The last lines of its stderr, for an error message."""
        return self._explain(self.directory / f"{self.name}.stderr", None)

    def _explain(self, stderr_path: Path, offset: int | None) -> str:
        text = _tail(stderr_path, 0)
        if offset is not None and self.log_file:
            text += _tail(self.log_file, offset)
        lines = [line for line in text.splitlines() if line.strip()][-5:]
        return " | ".join(lines) or "no output"


def _tail(path: Path, offset: int) -> str:
    """The end of `path` past `offset`, TAIL_BYTES at most: an error message wants its last lines, and a
    process that logged for days before it failed has a log of gigabytes."""
    try:
        start = max(offset, path.stat().st_size - TAIL_BYTES)
    except OSError:  # not written yet, or gone
        return ""
    return (tail.since(path, start, TAIL_BYTES) or b"").decode(errors="replace")


def find_binary(name: str) -> str | None:
    # Debian installs daemons in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        # As servers bind: connections of a previous run in TIME_WAIT do not
        # make the port taken, only a live listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def raise_files(pid: int, files: int) -> None:
    """Raise process `pid`'s soft file limit to `files`, or its hard limit if lower; never lowered. Where the
    system has no prlimit (macOS), or refuses, the child keeps the limit it inherited, and says so in the log."""
    prlimit = getattr(resource, "prlimit", None)
    if prlimit is None:
        log.warning("this system cannot raise process %d's file limit to %d: it keeps this process's", pid, files)
        return
    try:
        soft, hard = prlimit(pid, resource.RLIMIT_NOFILE)
        wanted = raised_soft(soft, hard, files)
        if wanted is not None:
            prlimit(pid, resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the file limit of process %d to %d: %s", pid, files, exc)


def parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a hook that makes the kernel SIGTERM the child when eventpipe dies, even by kill -9,
    so no orphan keeps a port or a data file."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: between fork and exec the hook only makes
    # one foreign call and takes no lock another thread could be holding.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie does not: it only waits to be reaped); False
    without /proc (macOS), where only the program itself is waited for."""
    return any(process.pgrp == pgid and process.state not in ("Z", "X") for process in processes())


def _asked(busy: Callable[[], bool] | None) -> bool:
    """What `busy` says; not busy when there is nothing to ask or a file it looks at cannot be read: the stop
    goes on (an error here left the child running, unreaped)."""
    try:
        return busy() if busy else False
    except OSError:
        return False
