"""A proxy in front of ClickHouse, as the driver meets one: it answers the queries a client sends as it
connects, like a server would, then every other request with what the test sets (a status and a page of
its own, bytes that are not ClickHouse's, or nothing at all)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

import clickhouse_connect
from clickhouse_connect.driver.client import Client

# What `SELECT version(), timezone()` gets; the settings query that follows gets no rows.
VERSION = b"24.8.1.1\tUTC\n"
GARBAGE = -1  # a 200 whose body is a proxy's own page
SILENT = 0  # the connection accepted, the request read, never an answer


class Gateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = 200  # a status, GARBAGE or SILENT, for every request but the connection's own
        self.code: int | None = None  # with a status: ClickHouse's own error, with this code
        self.released = threading.Event()  # set to let SILENT requests go
        self.hung = False  # SILENT to every request, the connection's own included

    @property
    def dsn(self) -> str:
        return f"http://user:secret@127.0.0.1:{self.server_address[1]}/eventpipe"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Gateway

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        query = unquote_plus(self.path) + self.rfile.read(size).decode("latin-1")
        if self.server.hung:
            self.server.released.wait(60)
            self.close_connection = True
        elif "version()" in query:
            self._send(200, VERSION, "TabSeparated")
        elif "system.settings" in query or self.server.answer == 200:
            self._send(200, b"", "Native")
        elif self.server.answer == GARBAGE:
            self._send(200, b"<html>\xff\xfe Welcome to the captive portal</html>", None)
        elif self.server.answer == SILENT:
            self.server.released.wait(60)
            self.close_connection = True
        elif self.server.code is not None:
            message = f"Code: {self.server.code}. DB::Exception: as the test says. (version 24.8.1.1)\n"
            self._send(
                self.server.answer, message.encode(), None, {"X-ClickHouse-Exception-Code": str(self.server.code)}
            )
        else:
            self._send(self.server.answer, b"<html>Bad Gateway</html>", None)

    do_GET = do_POST

    def _send(
        self, status: int, body: bytes, clickhouse_format: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if clickhouse_format:
            self.send_header("X-ClickHouse-Format", clickhouse_format)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()


def raised(server: Gateway, answer: int, query: str = "SELECT 1 FROM events") -> Exception:
    """What the driver raises for `query` when `server` answers it with `answer`."""
    client: Client = clickhouse_connect.get_client(dsn=server.dsn, autogenerate_session_id=False)
    server.answer = answer
    try:
        client.query(query)
    except Exception as exc:  # noqa: BLE001 - whatever the driver raises is the point
        return exc
    finally:
        server.answer = 200
    raise AssertionError(f"the driver took {answer} as an answer")
