"""The bench's HTTP client reads an answer within a bound, whatever the server sends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from eventpipe.bench import client
from eventpipe.bench.client import ApiClient
from eventpipe.errors import EventpipeError


class Endless(BaseHTTPRequestHandler):
    """Answers /big with more than the bound allows and /small with 3 bytes."""

    def do_GET(self) -> None:
        size = 4096 if self.path == "/big" else 3
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"x" * size)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), Endless)
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
    finally:
        api.close()
