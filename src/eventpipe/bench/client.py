"""An HTTP client for the benchmark: one kept-alive connection, GET requests one at a time, each timed.

HTTP/1.1 read by hand, not http.client: its reading of a response's headers
(the email package's parser) took 0.13 to 0.25 ms an answer here, run cold after
each read as the bench runs them (the all-time types 3.11 ms through http.client
against 2.93 through a plain socket, /healthz 0.45 against 0.32; one process,
the two clients' order alternating), and the API's figures would carry the
client's cost. This reads the status line, the headers it needs, and a body
framed by Content-Length or chunked, as any client must, and nothing else.
"""

from __future__ import annotations

import socket
import time

from eventpipe.errors import EventpipeError

# Twice the API's largest page (8 MiB): an answer is bounded before it is read, even from the bench's own API.
MAX_BODY = 16 * 1024 * 1024
# A status line and headers longer than this are no answer of the API's.
MAX_HEAD = 64 * 1024
READ_BYTES = 256 * 1024


class ApiClient:
    def __init__(self, port: int, key: str, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self._address, self._timeout = (host, port), timeout
        self._headers = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n".encode("ascii")
        self._socket: socket.socket | None = None
        self._buffer = b""

    def get(self, path: str) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending the request to the end of the body)."""
        if not path.isascii() or not path.isprintable() or " " in path:
            raise EventpipeError(f"GET {path!r}: a path is sent as written, percent-encoded ASCII")
        request = b"GET " + path.encode("ascii") + b" HTTP/1.1\r\n" + self._headers
        started = time.perf_counter()
        try:
            status, body = self._exchange(request, path)
        except EventpipeError:
            self.close()  # where the answer stopped making sense, the connection's next bytes would too
            raise
        except ValueError as exc:  # a length or a chunk size that is no number
            self.close()
            raise EventpipeError(f"GET {path}: the answer's framing is not HTTP's: {exc}") from exc
        except OSError as exc:
            # One retry on a fresh connection: the server may have closed an idle one.
            self.close()
            try:
                status, body = self._exchange(request, path)
            except OSError:
                raise EventpipeError(f"GET {path} on port {self._address[1]} failed: {exc}") from exc
        return status, body, time.perf_counter() - started

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except EventpipeError:
                pass
            if time.monotonic() > deadline:
                raise EventpipeError(f"the API on port {self._address[1]} was not ready within {timeout:.0f}s")
            time.sleep(0.2)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket, self._buffer = None, b""

    def _exchange(self, request: bytes, path: str) -> tuple[int, bytes]:
        if self._socket is None:
            self._socket = socket.create_connection(self._address, self._timeout)
            # Each request is one write: without it, a request after an answer waits for the delayed ACK.
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.sendall(request)
        status, keep, headers = self._head(path)
        if "content-length" in headers:
            size = int(headers["content-length"])
            if size > MAX_BODY:
                raise EventpipeError(f"GET {path} answered more than {MAX_BODY:,} bytes")
            body = self._exactly(size)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked(path)
        else:
            body = self._to_close(path)
        if not keep:
            self.close()
        return status, body

    def _head(self, path: str) -> tuple[int, bool, dict[str, str]]:
        """The status, whether the connection stays open, and the headers by lower-case name."""
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise EventpipeError(f"GET {path}: no end of the answer's headers within {MAX_HEAD:,} bytes")
            self._fill()
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise EventpipeError(f"GET {path}: not an HTTP/1.x answer: {status_line[:80]!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        return int(rest[:3]), keep, headers

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return body

    def _chunked(self, path: str) -> bytes:
        parts, total = [], 0
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                self._fill()
            size = int(self._buffer[:end].split(b";")[0], 16)
            self._buffer = self._buffer[end + 2 :]
            total += size
            if total > MAX_BODY:
                raise EventpipeError(f"GET {path} answered more than {MAX_BODY:,} bytes")
            parts.append(self._exactly(size))
            self._exactly(2)  # the CRLF after a chunk, or after the last one's (absent) trailers
            if size == 0:
                return b"".join(parts)

    def _to_close(self, path: str) -> bytes:
        try:
            while len(self._buffer) <= MAX_BODY:
                self._fill()
        except ConnectionError:
            body = self._buffer
            self.close()
            return body
        raise EventpipeError(f"GET {path} answered more than {MAX_BODY:,} bytes")

    def _fill(self) -> None:
        assert self._socket is not None
        data = self._socket.recv(READ_BYTES)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data
