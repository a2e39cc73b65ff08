"""paho's wait on its socket, by poll() rather than select().

paho 2.2 waits with select.select(), which cannot take a descriptor of 1,024 or
more (FD_SETSIZE): in `eventpipe up`, where the API's sockets and the engine's
files share the process with the worker, a reconnect under load got such a
descriptor, and paho took the ValueError for a lost connection, again and
again: ingest stopped for as long as the API was busy (an attack held 998 API
clients under a soft limit of 20,000: 2.5 minutes without a connection).
"""

from __future__ import annotations

import select
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as paho

READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR
RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux only


def wait(rlist: list[Any], wlist: list[Any], xlist: list[Any], timeout: float | None = None) -> tuple[list[Any], ...]:
    """select.select()'s answer, for the sockets paho asks about, with no bound on descriptor numbers. A
    closed socket (fileno -1) raises ValueError, as select() does, which paho reads as a lost connection."""
    masks: dict[int, int] = {}
    for sock in rlist:
        masks[sock.fileno()] = masks.get(sock.fileno(), 0) | select.POLLIN | select.POLLPRI
    for sock in wlist:
        masks[sock.fileno()] = masks.get(sock.fileno(), 0) | select.POLLOUT
    poller = select.poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)  # ValueError for -1
    ready = dict(poller.poll(None if timeout is None else timeout * 1000))
    readable = [sock for sock in rlist if ready.get(sock.fileno(), 0) & READABLE]
    writable = [sock for sock in wlist if ready.get(sock.fileno(), 0) & WRITABLE]
    return readable, writable, []


def install() -> None:
    """paho's `select` module, as paho sees it, with `wait` for its select(): every client of this process."""
    if getattr(vars(paho)["select"], "select", None) is not wait:
        setattr(paho, "select", SimpleNamespace(select=wait, error=select.error))  # noqa: B010 - paho's own name


def held(wake: Any | None, sock: Any, writing: bool, timeout: float) -> tuple[bool, bool]:
    """A wait on `sock` that does not ask whether it is readable (the worker, full, reads nothing and must not
    spin on what waits there): (woken through `wake`, the broker closed or reset the connection). POLLRDHUP
    sees the broker's close behind bytes not yet read, which a readable socket would hide; where there is no
    POLLRDHUP (macOS), a reset does, drawn by the valve's pings."""
    poller = select.poll()
    if wake is not None:
        poller.register(wake.fileno(), select.POLLIN)
    poller.register(sock.fileno(), RDHUP | (select.POLLOUT if writing else 0))  # ValueError for -1
    ready = dict(poller.poll(timeout * 1000))
    ended = bool(ready.get(sock.fileno(), 0) & (RDHUP | select.POLLHUP | select.POLLERR))
    return wake is not None and bool(ready.get(wake.fileno(), 0) & READABLE), ended
