"""An HTTP client for the benchmark: one kept-alive connection, requests one at a time, each timed."""

from __future__ import annotations

import http.client
import time

from eventpipe.errors import EventpipeError

# Twice the API's largest page (8 MiB): an answer is bounded before it is read, even from the bench's own API.
MAX_BODY = 16 * 1024 * 1024


class ApiClient:
    def __init__(self, port: int, key: str, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self._host, self._port, self._timeout = host, port, timeout
        self._headers = {"Authorization": f"Bearer {key}"}
        self._connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def get(self, path: str) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending the request to the end of the body)."""
        started = time.perf_counter()
        try:
            self._connection.request("GET", path, headers=self._headers)
            response = self._connection.getresponse()
            body = _body(response, path)
        except (OSError, http.client.HTTPException) as exc:
            # One retry on a fresh connection: the server may have closed an idle one.
            self._connection.close()
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                self._connection.request("GET", path, headers=self._headers)
                response = self._connection.getresponse()
                body = _body(response, path)
            except (OSError, http.client.HTTPException):
                raise EventpipeError(f"GET {path} on port {self._port} failed: {exc}") from exc
        return response.status, body, time.perf_counter() - started

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except EventpipeError:
                pass
            if time.monotonic() > deadline:
                raise EventpipeError(f"the API on port {self._port} was not ready within {timeout:.0f}s")
            time.sleep(0.2)

    def close(self) -> None:
        self._connection.close()


def _body(response: http.client.HTTPResponse, path: str) -> bytes:
    body = response.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise EventpipeError(f"GET {path} answered more than {MAX_BODY:,} bytes")
    return body
