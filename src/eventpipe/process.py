"""This host's processes, as the stack, the benchmark and the tests observe them (Linux /proc), and what
eventpipe's own processes set for themselves: their file limit, the signals that interrupt them."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (this one by default), read the way `ps` does."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process, 0.0 when it cannot be read."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0  # utime, stime: fields 14, 15 of stat(5)


def running_since(pid: int) -> int | None:
    """When a process that runs started (clock ticks after boot, field 22 of stat(5)); None once it has
    exited, a zombie included. With its pid alone, a number the kernel has handed on would pass for it.
    Without /proc (macOS) 0 while the pid is in use: its start cannot be read there."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # another user's
            return 0
        return 0
    fields = _stat(pid)
    return None if not fields or fields[0] == "Z" else int(fields[19])  # state, starttime: fields 3, 22


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command (which may hold spaces and parentheses), from the
    state on (field 3 of stat(5)); none once it has exited."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


class Process(NamedTuple):
    """One line of /proc/<pid>/stat, the fields eventpipe reads."""

    pid: int
    command: str
    state: str
    ppid: int
    pgrp: int


def processes() -> Iterator[Process]:
    """Every process of this host, as /proc lists it now (none without /proc: macOS)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        state, ppid, pgrp = text[text.rindex(")") + 2 :].split(maxsplit=3)[:3]
        yield Process(int(stat.parent.name), text[text.index("(") + 1 : text.rindex(")")], state, int(ppid), int(pgrp))


def pid_running(*argv_parts: str) -> int | None:
    """The PID of a process whose command line holds every one of `argv_parts`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if all(part in cmdline for part in argv_parts):
            return int(entry.name)
    return None


# The file limit a server process of eventpipe wants: the engine, the broker's and the API's sockets share
# it (`eventpipe up` under 256 ran out with 150 clients and 60 producers; under 64 it failed at start). Never
# raised past it: 1,024 carried that load, and a descriptor past 1,023 breaks whatever waits with select()
# (FD_SETSIZE), as paho did until eventpipe.mqtt.poller.
MIN_FILES = 1024


def raised_soft(soft: int, hard: int, files: int) -> int | None:
    """The soft file limit that allows `files` as far as `hard` does, or None where `soft` needs no raise
    (a limit is never lowered)."""
    wanted = files if hard == resource.RLIM_INFINITY else min(files, hard)
    return wanted if soft != resource.RLIM_INFINITY and soft < wanted else None


def raise_file_limit() -> str | None:
    """Raise this process's soft file limit to MIN_FILES where its hard limit allows (macOS starts at 256,
    systemd's and many shells' hard limits are far higher); a warning naming `ulimit -n` when it stays under."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = raised_soft(soft, hard, MIN_FILES)
    if wanted is not None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < MIN_FILES:
        return (
            f"this process may open {soft} files, and under {MIN_FILES} it can run out under load: "
            f"raise the limit (ulimit -n {MIN_FILES}, or LimitNOFILE= in a systemd unit)"
        )
    return None


@contextmanager
def interrupted_by(*signals: signal.Signals) -> Iterator[None]:
    """Within the block, each of `signals` raises KeyboardInterrupt, as Ctrl-C does, so a command's cleanups
    run and it says what it left (SIGTERM's default killed it where it stood: the bench left `eventpipe up`
    and its broker running, a fill left the user index short). A signal already ignored stays ignored: under
    `nohup` a terminal's hang-up cut a restore short after its drop."""
    previous = {number: signal.getsignal(number) for number in signals}
    for number, handler in previous.items():
        if handler is signal.SIG_DFL:
            signal.signal(number, signal.default_int_handler)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is signal.SIG_DFL:
                signal.signal(number, handler)
