"""The bench's HTTP client reads an answer within a bound, whatever the server sends, framed as HTTP/1.1 frames
it, on one connection while the server keeps it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from eventpipe.bench import client
from eventpipe.bench.client import ApiClient
from eventpipe.errors import EventpipeError


class Scripted(BaseHTTPRequestHandler):
    """/big: more than the bound allows; /small: 3 bytes; /chunked and /bigchunked: the same, chunked;
    /closing: 2 bytes, then the connection is closed. HTTP/1.1: a connection serves request after request."""

    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        Scripted.connections += 1

    def do_GET(self) -> None:
        chunked = self.path.endswith("chunked")
        size = {"/big": 4096, "/bigchunked": 4096, "/closing": 2}.get(self.path, 3)
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        if self.path == "/closing":
            self.send_header("Connection", "close")
        self.end_headers()
        if not chunked:
            self.wfile.write(b"x" * size)
            return
        for start in range(0, size, 512):
            piece = b"x" * min(512, size - start)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


class Server(HTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that refuses an answer over its bound closes the connection as the body is written:
        # expected here, and not worth a traceback in the test run's output.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture
def port() -> Iterator[int]:
    Scripted.connections = 0
    server = Server(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_an_answer_over_the_bound_is_refused_not_read_whole(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_BODY", 1024)
    api = ApiClient(port, "k")
    try:
        assert api.get("/small")[:2] == (200, b"xxx")
        with pytest.raises(EventpipeError, match="GET /big answered more than 1,024 bytes"):
            api.get("/big")
        with pytest.raises(EventpipeError, match="GET /bigchunked answered more than 1,024 bytes"):
            api.get("/bigchunked")
    finally:
        api.close()


def test_answers_chunked_or_not_come_whole_over_one_kept_connection(port: int) -> None:
    api = ApiClient(port, "k")
    try:
        assert api.get("/chunked")[:2] == (200, b"xxx")
        assert api.get("/big")[:2] == (200, b"x" * 4096)
        assert api.get("/bigchunked")[:2] == (200, b"x" * 4096)
        assert Scripted.connections == 1
        # The server closes after this one: the next request opens a connection of its own.
        assert api.get("/closing")[:2] == (200, b"xx")
        assert api.get("/small")[:2] == (200, b"xxx")
        assert Scripted.connections == 2
    finally:
        api.close()
