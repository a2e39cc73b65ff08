"""What a client can cause at will, logged as a count at most once a minute instead of a line each time.

An attack makes many of each (connections over the cap, bytes that are not
HTTP, upgrade requests): one line apiece would let a client write the log as
fast as it sends. The API's HTTP protocol (api.protocol) counts them here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

# At most one line a minute about each thing a client can cause at will: an attack makes many.
LOG_EVERY_S = 60.0
# uvicorn's warnings about what a client sent, one line per request, and what they are counted as:
# a client on one kept-alive connection could write the log as fast as it sends requests.
CLIENT_WARNINGS = {"Invalid HTTP request received.": "malformed", "Unsupported upgrade request.": "upgrade"}
# uvicorn's advice to install a WebSocket library after an upgrade request: the API has no
# WebSocket routes (ws="none" on purpose), so it would mislead an operator.
WEBSOCKET_ADVICE = "No supported WebSocket library detected"
# What asyncio reports, with a traceback each time, when accept() fails for want of descriptors or memory. It
# retries a second later, but Python 3.11 goes on through its whole accept loop first: a limit of 256 files
# shared with the engine logged 101,992 tracebacks (54 MB) in 40 s (a storage-fault attack). Counted by the
# API's loop (api.protocol) and the metrics port's (telemetry.exporter).
ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
# The line each Summary logs; {n} is how many happened since its last line.
SUMMARIES = {
    "limit": "refused {n} connection(s) over the cap of {cap} open ones",
    "malformed": "closed {n} connection(s) that sent bytes that are not HTTP/1.x (400 when it could still answer)",
    "upgrade": "ignored the Upgrade header of {n} request(s): this API serves neither WebSocket nor h2c",
    "exhausted": "could not accept connections {n} time(s): the process is out of file descriptors or memory"
    " (raise its file limit, ulimit -n; the engine of `eventpipe up` shares it)",
}


class Summary:
    """Counts one kind of event a client can cause at will; logs it at most once a minute, with the count.

    The first of a burst is logged at once, the rest in one line a minute
    later (on the event loop that saw them), so a burst's total is never left
    waiting for the next burst."""

    def __init__(self, line: str, every_s: float = LOG_EVERY_S) -> None:
        self.line, self.every_s = line, every_s
        self.count, self.logged = 0, float("-inf")
        self._pending: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        self.count += 1
        wait = self.logged + self.every_s - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._pending is None:
            try:
                self._pending = asyncio.get_running_loop().call_later(wait, self.flush)
            except RuntimeError:  # pragma: no cover - uvicorn calls protocols on their loop
                self.flush()

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        self._pending = None
        if self.count:
            log.warning("%s (at most one such line a minute)", self.line.format(n=self.count))
            self.count, self.logged = 0, time.monotonic()


def server_summaries(max_connections: int) -> dict[str, Summary]:
    """One server's summaries, by kind."""
    return {kind: Summary(line.replace("{cap}", str(max_connections))) for kind, line in SUMMARIES.items()}


def on_loop_exception(exhausted: Summary, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An event loop's exception handler (with `exhausted` bound): accept() out of resources is counted there,
    the rest logged as asyncio logs it. The API's server and the metrics port each set one."""
    if context.get("message") == ACCEPT_EXHAUSTED:
        exhausted()
    else:
        loop.default_exception_handler(context)


class ClientLog:
    """uvicorn's logger, with its per-request warnings about a client's bytes throttled (one per server)."""

    def __init__(self, logger: logging.Logger, summaries: dict[str, Summary]) -> None:
        self._logger, self._summaries = logger, summaries

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        kind = CLIENT_WARNINGS.get(msg) if isinstance(msg, str) else None
        if kind is not None:
            self._summaries[kind]()
        elif not (isinstance(msg, str) and msg.startswith(WEBSOCKET_ADVICE)):
            self._logger.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)
