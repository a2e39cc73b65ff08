"""The /metrics endpoint: one thread and a fixed number of connections, whatever clients do.

prometheus_client's own server starts a thread per connection and waits on a
silent socket forever, so a few hundred idle connections made a few hundred
threads in the worker. Here every connection lives on one event loop thread:
it has `read_timeout_s` to send its request, and past `max_connections` the
oldest is closed. A scraper sends its request as it connects, so it is never
the oldest for long and is answered even while the slots are full of idlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import logging
import socket
import threading
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from eventpipe.errors import EventpipeError
from eventpipe.telemetry.summary import SUMMARIES, Summary, on_loop_exception

log = logging.getLogger(__name__)

PATHS = ("/metrics", "/")
# In `eventpipe up`, where worker and API share a process and so this endpoint: the API's registry,
# which Prometheus scrapes as its own job (stack.prometheus).
API_PATH = "/metrics/api"
# And its broker's statistics (stack.statistics), scraped as job "mosquitto", as compose's exporter is.
BROKER_PATH = "/metrics/broker"
# Prometheus sends a few hundred bytes of request; anything far larger is not a scrape.
MAX_REQUEST_BYTES = 16 * 1024


class Unavailable(EventpipeError):  # named for the answer, 503
    """Raised by a collector whose values cannot be told now: the scrape is answered 503, and fails."""


class Exporter:
    """Serves `registry` on host:port from a single daemon thread, `api` on API_PATH and `broker` on
    BROKER_PATH when given."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        api: CollectorRegistry | None = None,
        broker: CollectorRegistry | None = None,
        max_connections: int = 32,
        read_timeout_s: float = 5.0,
    ) -> None:
        self._registries = dict.fromkeys(PATHS, registry)
        self._registries |= {
            path: extra for path, extra in ((API_PATH, api), (BROKER_PATH, broker)) if extra is not None
        }
        self._host, self._port = host, port
        self._max_connections = max_connections
        self._timeout = read_timeout_s
        # Insertion-ordered: the first is the oldest, the one to close when full.
        self._open: dict[asyncio.StreamWriter, None] = {}
        self._loop = asyncio.new_event_loop()
        # Out of file descriptors, asyncio retries accept() and logs a traceback each time: under `ulimit -n 256`
        # an attack saw 182,244 of them, 100 MB of log in 4 minutes. A count a minute instead, as the API's.
        self._loop.set_exception_handler(functools.partial(on_loop_exception, Summary(SUMMARIES["exhausted"])))
        self._thread = threading.Thread(target=self._run, name="eventpipe-metrics", daemon=True)
        self._socket: socket.socket | None = None
        self._stopping = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port: the one asked for, or the one the system chose for 0."""
        return self._socket.getsockname()[1] if self._socket is not None else self._port

    def start(self) -> None:
        """Listen (an OSError here means the port is taken) and serve on the thread."""
        # Bound here, not by asyncio from a host name: asyncio would resolve it
        # on an executor, a pool of threads this server promises not to have.
        try:
            family, *_, address = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)[0]
            self._socket = socket.create_server(address[:2], family=family, backlog=1024)
        except OSError:
            self._loop.close()
            raise
        # Listening from here on: connections wait in the backlog until the loop takes them.
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, sock=self._socket, limit=MAX_REQUEST_BYTES)
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for writer in list(self._open):
                writer.transport.abort()
            handlers = asyncio.all_tasks() - {asyncio.current_task()}
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    def shutdown(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing left to stop
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[writer] = None
        while len(self._open) > self._max_connections:
            # Out of the count now, not once its handler has run: many connections
            # accepted at once would otherwise all pick the same oldest one.
            oldest = next(iter(self._open))
            del self._open[oldest]
            oldest.transport.abort()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # silent, too slow, too large or gone: nothing to answer
        except Exception:  # a failing collector must not take the endpoint down
            log.exception("metrics request failed")
        finally:
            self._open.pop(writer, None)
            writer.transport.abort()

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method, target, *_ = [*lines[0].split(" "), "", ""]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        url = urlsplit(target)
        registry = self._registries.get(url.path)
        if registry is None:
            return _response("404 Not Found", [("Content-Type", "text/plain")], b"not found: try /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", [("Allow", "GET, HEAD")], b"")
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        source: Collector = registry
        names = parse_qs(url.query).get("name[]")
        if names:
            source = registry.restricted_registry(names)
        try:
            body = encoder(source)
        except Unavailable as exc:
            return _response("503 Service Unavailable", [("Content-Type", "text/plain")], f"{exc}\n".encode())
        extra = [("Content-Type", content_type)]
        if gzip_accepted(headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        return _response("200 OK", extra, body, head_only=method == "HEAD")


def _response(status: str, headers: list[tuple[str, str]], body: bytes, *, head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)
