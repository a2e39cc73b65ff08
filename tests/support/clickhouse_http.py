"""A ClickHouse server's HTTP interface in front of a chDB engine, for the server path's failures that no
real server here can be made to produce on demand.

It models, from ClickHouse's documentation of the HTTP interface
(https://clickhouse.com/docs/interfaces/http, "HTTP response codes caveats" and "Response buffering"):

- a query that succeeds: 200, its result in the body;
- a query that fails before any header went out: 500 with `X-ClickHouse-Exception-Code` and the
  exception's text;
- a query that fails after its headers went out: the status line (200) and headers are sent first, so
  the exception can only be written into the body, after an `X-ClickHouse-Exception-Tag` header, in the
  `__exception__` block the page describes. With nothing to send before it ends (an INSERT), a query
  sends its headers early only for `send_progress_in_http_headers=1`, once it has run longer than
  `http_headers_progress_interval_ms` (default 100): then the `X-ClickHouse-Progress` headers go out. The
  page warns that `wait_end_of_query=1` does not hold the header back against progress headers, so it is
  not looked at here.
- a statement that runs long and succeeds: with `send_progress_in_http_headers=1`, the status line and an
  `X-ClickHouse-Progress` header every `http_headers_progress_interval_ms` while it runs (what keeps a
  client's read timeout from running out), else nothing until it ends;
- a redirect (307 to a path of this server, which answers 200 to anything and counts what it got), as
  a proxy or load balancer in front of a server may answer;
- a query sent as a multipart form (the driver's way with large bound parameters), and the server's cap on
  one field's value (`http_max_field_value_size`, 128 KiB by default): past it, 500 with code 1000
  (POCO_EXCEPTION, "Field value too long"), whatever the query;
- the `backups` disk a server declares in clickhouse/config.d, in `<directory>/backups`;
- what a server logs of each statement (system.query_log, its log file): its text with its parameters written
  in, and the request's URL; not an INSERT's data. Each request's statement, parameters and URL are kept as a
  JSON line in `<directory>/statements.log` (ClickHouseHttp.statements).

Faults are set in `<directory>/fault.json` (ClickHouseHttp.fault), read on every request:
`{"mode": "late_error", "match": "INSERT INTO `events`", "runs_ms": 60000}` fails each matching query as a
query running that long would fail with MEMORY_LIMIT_EXCEEDED, and stores nothing;
a `"message"` gives the failure's text instead (`Code: 75. DB::ErrnoException: ...`);
`{"mode": "page", "match": ...}` answers it with a proxy's own page (200, no X-ClickHouse- header);
`{"mode": "redirect", "match": ...}` answers it with a redirect; `{"mode": "slow", "match": ..., "runs_ms": 20000}`
runs it that long in real time (progress headers meanwhile, when asked for) and then succeeds.

Run as its own process (`python -m tests.support.clickhouse_http PORT DIRECTORY`): chDB runs one engine per
process, and the tests' own already runs one.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from eventpipe.port import free_port
from tests.support.wait import wait_until

# Where a redirect sends a request: answered 200, with nothing done, and counted in ELSEWHERE_LOG.
ELSEWHERE = "/elsewhere"
ELSEWHERE_LOG = "elsewhere.log"
STATEMENTS_LOG = "statements.log"
MEMORY_LIMIT_EXCEEDED = 241
MEMORY_LIMIT = (
    f"Code: {MEMORY_LIMIT_EXCEEDED}. DB::Exception: Memory limit (total) exceeded: would use 3.50 GiB."
    " (MEMORY_LIMIT_EXCEEDED) (version 25.8.1.1)"
)
# ClickHouse's default http_headers_progress_interval_ms.
DEFAULT_PROGRESS_INTERVAL_MS = 100
TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
# A server's http_max_field_value_size by default; it takes one byte more.
MAX_FIELD_VALUE = 128 * 1024 + 1
FIELD_TOO_LONG = "Code: 1000. DB::Exception: Field value too long. (POCO_EXCEPTION) (version 26.3.1.1)"
NATIVE_INSERT = re.compile(r"\s*INSERT\s+INTO\s+(.+?)\s*(\(.*\))?\s*FORMAT\s+Native\s*$", re.IGNORECASE | re.DOTALL)


class ClickHouseHttp:
    """The fake server as a child process on a free port, with its own data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"http://default:@127.0.0.1:{self.port}/default"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.clickhouse_http", str(self.port), str(self.directory)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._ready, timeout=60, what="the fake ClickHouse listening")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "server.log").read_text(errors="replace")
            raise RuntimeError(f"the fake ClickHouse exited with {self.process.returncode}: {log[-2000:]}")
        return (self.directory / "ready").exists()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def fault(self, mode: str = "ok", **options: object) -> None:
        (self.directory / "fault.json").write_text(json.dumps({"mode": mode, **options}))

    def statements(self) -> list[str]:
        """Each statement sent since the server started, as the text of its JSON line: the query (an insert's
        without its data) and every parameter of the request, URL and form."""
        log = self.directory / STATEMENTS_LOG
        return log.read_text().splitlines() if log.exists() else []

    def elsewhere_requests(self) -> int:
        """How many requests a redirect target got."""
        log = self.directory / ELSEWHERE_LOG
        return len(log.read_text().splitlines()) if log.exists() else 0


@contextmanager
def migrated(directory: Path) -> Iterator[ClickHouseHttp]:
    """The fake server running, its store made by eventpipe's migrations; stopped afterwards."""
    from eventpipe.store.client import connect
    from eventpipe.store.migration import migrate

    server = ClickHouseHttp(directory)
    server.start()
    try:
        migrate(connect(server.dsn))
        yield server
    finally:
        server.stop()


def _decoded(body: bytes, encoding: str | None) -> bytes:
    if not encoding:
        return body
    if encoding == "lz4":
        import lz4.frame

        # Every frame: the driver compresses an insert one chunk at a time, a frame each, and
        # lz4.frame.decompress reads the first only (a 250,000-row insert stored 16,384 rows).
        out, rest = b"", body
        while rest:
            frame = lz4.frame.LZ4FrameDecompressor()
            out += frame.decompress(rest)
            rest = frame.unused_data
        return out
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "zstd":
        from backports import zstd

        return bytes(zstd.decompress(body))
    raise ValueError(f"unsupported Content-Encoding {encoding}")


def _serve(port: int, directory: Path) -> None:
    from chdb import session

    from eventpipe.store.client import engine_options

    # The options an embedded store starts with: the backups disk a server has from its config.d.
    options = engine_options(f"chdb://{directory / 'chdb'}")
    engine = session.Session(f"{directory / 'chdb'}?{urlencode(options)}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            out = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return out

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            raw = self._body()
            if parts.path.rstrip("/") == "/ping":
                self._send(200, b"Ok.\n", {})
                return
            if parts.path == ELSEWHERE:
                with (directory / ELSEWHERE_LOG).open("a") as log:
                    log.write(json.dumps({"bytes": len(raw), "query": params.get("query", "")[:200]}) + "\n")
                self._send(200, b"", {})
                return
            if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
                # A server reads the form, and refuses a field over its cap, before it parses any query.
                fields = _form_fields(self.headers["Content-Type"], _decoded(raw, self.headers.get("Content-Encoding")))
                if any(len(value) > MAX_FIELD_VALUE for value in fields.values()):
                    self._send(500, f"{FIELD_TOO_LONG}\n".encode(), {"X-ClickHouse-Exception-Code": "1000"})
                    return
                params.update({name: value.decode() for name, value in fields.items()})
                raw = b""
            query, data = self._query(params, raw)
            with lock, (directory / STATEMENTS_LOG).open("a") as log:
                shown = {name: value for name, value in params.items() if name != "query"}
                line = {"query": query, "parameters": shown, "url": self.path}
                log.write(json.dumps(line, ensure_ascii=False) + "\n")
            fault = _fault(directory)
            mode, match = fault.get("mode", "ok"), str(fault.get("match", ""))
            if mode != "ok" and match in query:
                if mode == "redirect":
                    self._send(int(fault.get("status", 307)), b"", {"Location": ELSEWHERE})
                    return
                if mode == "late_error":
                    self._fail_late(params, int(fault.get("runs_ms", 0)), str(fault.get("message", MEMORY_LIMIT)))
                    return
                if mode == "page":
                    # Not ClickHouse's: a proxy's own page, with none of the X-ClickHouse- headers.
                    self._send(200, b"<html><body><h1>Maintenance</h1>Back soon.</body></html>", {})
                    return
                if mode == "slow":
                    self._run_slowly(params, int(fault.get("runs_ms", 0)))
            try:
                body, fmt = self._execute(query, params, data)
            except Exception as exc:  # noqa: BLE001 - the engine's error is the answer
                code = re.search(r"Code: (\d+)", str(exc))
                self._send(500, f"{exc}\n".encode(), {"X-ClickHouse-Exception-Code": code[1] if code else "1001"})
                return
            self._send(200, body, {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC"})

        def _query(self, params: dict[str, str], raw: bytes) -> tuple[str, bytes | None]:
            """The query and an insert's Native data, from the URL and the body as the driver sends them."""
            body = _decoded(raw, self.headers.get("Content-Encoding"))
            query = params.get("query")
            if query is None:
                head, _, rest = body.partition(b"\n")
                if NATIVE_INSERT.match(head.decode("utf-8", "replace")):
                    return head.decode(), rest
                return body.decode("utf-8", "replace"), None
            if query.lstrip().upper().startswith("INSERT"):
                return query, body
            return (query + "\n" + body.decode("utf-8", "replace")) if body else query, None

        def _fail_late(self, params: dict[str, str], runs_ms: int, message: str) -> None:
            interval = int(params.get("http_headers_progress_interval_ms", DEFAULT_PROGRESS_INTERVAL_MS))
            if params.get("send_progress_in_http_headers") != "1" or runs_ms <= interval:
                # No header went out before the failure: silence while it runs, then a proper error answer.
                time.sleep(runs_ms / 1000)
                code = re.search(r"Code: (\d+)", message)
                self._send(500, f"{message}\n".encode(), {"X-ClickHouse-Exception-Code": code[1] if code else "1001"})
                return
            tag = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(16))
            block = f"\r\n__exception__\r\n{tag}\r\n{message}\r\n{len(message)} {tag}\r\n__exception__\r\n"
            progress = '{"read_rows":"0","read_bytes":"0","written_rows":"0","written_bytes":"0"}'
            self._send(
                200,
                block.encode(),
                {"X-ClickHouse-Exception-Tag": tag, "X-ClickHouse-Progress": progress, "X-ClickHouse-Format": "Native"},
            )

        def _run_slowly(self, params: dict[str, str], runs_ms: int) -> None:
            """A statement that takes `runs_ms` of real time, then succeeds (answered by the caller). Asked
            for progress headers, a server sends its status line and one every interval meanwhile, which
            keeps a client's read timeout from running out; else nothing until the end."""
            interval = int(params.get("http_headers_progress_interval_ms", DEFAULT_PROGRESS_INTERVAL_MS))
            if params.get("send_progress_in_http_headers") != "1":
                time.sleep(runs_ms / 1000)
                return
            self.send_response(200)
            waited = 0
            while waited + interval < runs_ms:
                time.sleep(interval / 1000)
                waited += interval
                self.send_header("X-ClickHouse-Progress", '{"read_rows":"0","written_rows":"0"}')
                self.flush_headers()
            time.sleep((runs_ms - waited) / 1000)
            self.headers_sent = True

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            if getattr(self, "headers_sent", False):
                # The status line went out with the progress headers: the rest of the headers and the body.
                self.headers_sent = False
            else:
                self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _execute(self, query: str, params: dict[str, str], data: bytes | None) -> tuple[bytes, str]:
            with lock:
                engine.query(f"USE `{params.get('database') or 'default'}`")
                if data is not None:
                    insert = NATIVE_INSERT.match(query)
                    assert insert is not None, f"not a Native insert: {query[:200]}"
                    path = directory / f"insert-{threading.get_ident()}.native"
                    path.write_bytes(data)
                    # The client's own statement, run as a server runs it.
                    table, columns = insert[1], insert[2] or ""
                    engine.query(f"INSERT INTO {table} {columns} SELECT * FROM file('{path}', Native)")  # noqa: S608
                    return b"", "Native"
                fmt = "TabSeparated"
                trailing = TRAILING_FORMAT.search(query)
                if trailing:
                    fmt, query = trailing[1], query[: trailing.start()]
                bound = {name[6:]: value for name, value in params.items() if name.startswith("param_")}
                result = engine.query(query, fmt, params=bound) if bound else engine.query(query, fmt)
                return (result.bytes() if result is not None else b""), fmt

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", port), Handler)
    (directory / "ready").touch()
    server.serve_forever()


def _form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        fields[str(part.get_param("name", header="content-disposition"))] = (
            payload if isinstance(payload, bytes) else b""
        )
    return fields


def _fault(directory: Path) -> dict[str, Any]:
    try:
        fault: dict[str, Any] = json.loads((directory / "fault.json").read_text())
    except (OSError, ValueError):
        return {"mode": "ok"}
    return fault


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]))
