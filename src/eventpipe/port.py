"""Where servers on this host listen: the address a client here reaches one at, why a host cannot be
listened on, and ports free to start one on, claimed so that no other process on this host is handed them."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

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

# This process's share of the ports free_port hands out: [its number, how many processes share them], all of
# them unless told otherwise (set_share).
_share: list[int] = [0, 1]


def set_share(number: int, count: int) -> None:
    """From now on, hand out only ports of share `number` of `count` (from 0): for processes that start servers
    side by side and each remember only the ports they were given, as a test suite's parallel processes do.
    Told by whoever runs them, once per process; processes this one starts are not told, and take from all."""
    if not 0 <= number < count:
        raise ValueError(f"share {number} of {count}: the number must be at least 0 and under the count")
    _share[:] = [number, count]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server about to start there, outside the
    range the kernel gives outgoing connections, and never one this process was given before: the kernel
    may hand the same free port out twice in a row, and a stack given it for two of its servers fails to
    start (seen in CI).

    Nor one another process on this host that asked holds (`claim`): two test runs, or two
    pytest-xdist workers, could each be handed the same free port before either listens on it. Only ports of
    this process's share too, where it was told one (set_share)."""
    share, shares = _share
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
