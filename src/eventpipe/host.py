"""This host's addresses, ports and processes, as the stack, the benchmark and the tests observe them (Linux /proc)."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import resource
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# Addresses that listen on every interface, and the loopback address this host reaches them on: `::`
# takes IPv6 only (asyncio and socket.create_server set IPV6_V6ONLY), so 127.0.0.1 was refused.
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def address(host: str, port: int) -> str:
    """`host:port` that reaches, from this host, a server listening on `host` (a setting such as
    EVENTPIPE_API_HOST): a wildcard through the loopback, an IPv6 address in brackets."""
    host = WILDCARDS.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unlistenable(host: str) -> str | None:
    """Why no server can listen on `host` whatever the port (a name that does not resolve, an address not
    this host's), or None: then a server that failed to listen there was refused its port. Asked once a
    server has failed (uvicorn says why only in its log), so that the error names the host setting or
    the port setting, whichever is at fault: both were blamed on the port."""
    try:
        family, *_, where = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(where[:2])  # port 0: any port will do
    except OSError as exc:  # socket.gaierror for a name
        return exc.strerror or str(exc)
    return None


# Ports free_port has handed out in this process.
_given: set[int] = set()
# One file of the temp dir for the processes of one user on this host that hand out ports: a byte of it
# locked per port given (record locks, which the kernel drops when the process ends, kill -9 included), so
# that two test runs or benchmarks at once are not handed the same port before either listens on it. A file
# per user: another user's could not be opened in a sticky /tmp, and could hold every port.
CLAIMS = Path(tempfile.gettempdir()) / f"eventpipe-ports-{os.getuid()}.lock"
_claims: list[int] = []
# The ports tried before free_port gives up: far more than the ports others could hold.
MOST_TRIES = 10_000
# Tries outside the ephemeral range before the kernel's picks: a range set wide (1024-65000) leaves a few
# hundred ports outside it, which two test runs at once could all hold.
OUTSIDE_TRIES = 2_000
# free_port picks below the kernel's ephemeral range (or above it): a port from that range (bind to port 0)
# can be taken by any outgoing connection between the pick and the server's bind, as the stack's own
# clients did in CI ("address already in use" on the API's port). From 10000 up: fewer well-known servers.
LOWEST = 10_000
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Its own generator: a test that seeds `random` would otherwise replay the same ports in every process.
_random = random.Random()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server about to start there, outside the
    range the kernel gives outgoing connections, and never one this process was given before: the kernel
    may hand the same free port out twice in a row, and a stack given it for two of its servers fails to
    start (seen in CI).

    Nor one another process on this host that asked holds (`claim`): two test runs, or two
    pytest-xdist workers, could each be handed the same free port before either listens on it. Under
    pytest-xdist, only ports of this test process's share too (their children inherit it)."""
    share, shares = _share()
    spans = [span for span in _outside_ephemeral() if len(span) >= 2 * shares]
    for tried in range(MOST_TRIES):
        port = _pick(spans if tried < OUTSIDE_TRIES else [])
        # Halved: Linux hands out odd ports for bind(0), which _pick falls back on, so the port itself would
        # split unevenly.
        if (port >> 1) % shares == share and port not in _given and _listenable(port) and claim(port):
            _given.add(port)
            return port
    raise OSError(f"no free port in {MOST_TRIES} tries: all held by this process or others ({CLAIMS})")


def _outside_ephemeral() -> list[range]:
    """The ports from LOWEST up that the kernel never hands a socket by itself (Linux's range; elsewhere
    IANA's 49152-65535)."""
    try:
        low, high = map(int, EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        low, high = 49152, 65535
    return [range(LOWEST, low), range(high + 1, 65536)]


def _pick(spans: list[range]) -> int:
    """A port from `spans` evenly, or the kernel's pick where they are empty (a range set to 1024-65535)."""
    total = sum(map(len, spans))
    if total:
        at = _random.randrange(total)
        for span in spans:
            if at < len(span):
                return span[at]
            at -= len(span)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listenable(port: int) -> bool:
    """Whether a server could bind `port` on any address now: every IPv4 one (which covers 127.0.0.1), and
    every IPv6 one where the host has IPv6 (a server on ::1 alone passed for free). Without SO_REUSEADDR,
    which servers set: a port with connections still in TIME_WAIT is passed over too."""
    for family, anywhere in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # a test bind
        try:
            sock = socket.socket(family)
        except OSError:  # no IPv6 here
            continue
        with sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((anywhere, port))
            except OSError:
                return False
    return True


def claim(port: int) -> bool:
    """Hold `port` for this process until it ends, unless another process holds it (free_port's claims).
    True too where claims cannot be made (no temp dir to write in, a file system without record locks):
    ports are then separated within this process only."""
    if not _claims:
        try:
            _claims.append(os.open(CLAIMS, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError:
            _claims.append(-1)
    if _claims[0] < 0:
        return True
    try:
        fcntl.lockf(_claims[0], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False  # another process holds it
        # ENOLCK and the like say nothing of the port, and would say it of every one: no claims from now on.
        os.close(_claims[0])
        _claims[0] = -1
    return True


def _share() -> tuple[int, int]:
    """(this test process's number, how many there are), or (0, 1) outside pytest-xdist."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(worker[2:]) < int(count):
        return int(worker[2:]), int(count)
    return 0, 1


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
