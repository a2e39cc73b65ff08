"""The HTTP API served by uvicorn on a thread, so the command's own signal handling decides the exit."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from eventpipe.api.certificate import Certificate
from eventpipe.api.metrics import closed_connections
from eventpipe.api.protocol import READ_TIMEOUT_S, WRITE_STALL_S, connection_limit, guarded
from eventpipe.errors import ConfigError
from eventpipe.port import address, unlistenable


class Server(uvicorn.Server):
    """uvicorn's server, with an exception handler of our own on the event loop it runs."""

    def __init__(self, config: uvicorn.Config, on_loop_exception: LoopExceptionHandler) -> None:
        super().__init__(config)
        self._on_loop_exception = on_loop_exception

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self._on_loop_exception)
        await super().serve(sockets)


LoopExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class ApiServer:
    """HTTPS only when given a certificate and its key; plain HTTP otherwise."""

    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        max_connections: int | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
        write_stall_s: float = WRITE_STALL_S,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`registry`, the app's, gets the count of connections the server closes itself, and when its
        certificate ends (api.certificate)."""
        self._host, self._port = host, port
        self._tls = cert_file is not None and key_file is not None
        if self._tls:
            _check_pair(cert_file, key_file)
        if registry is not None:
            registry.register(Certificate(cert_file if self._tls else None))
        protocol = guarded(
            connection_limit() if max_connections is None else max_connections,
            read_timeout_s,
            write_stall_s,
            closed_connections(registry) if registry is not None else None,
        )
        # lifespan off: the app has no startup work; logs at warning: eventpipe logs its own lines.
        # No log_config: uvicorn's lines go through eventpipe's handler, which redacts them.
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,
            lifespan="off",
            # h11, named: "auto" takes httptools wherever it is installed, and uvicorn's httptools
            # protocol buffers a request line and headers without bound; h11 stops once it holds 16 KiB
            # without a complete request head (tests/integration/test_api.py sends a 1 MiB header).
            # Guarded: uvicorn bounds neither open connections nor the time a request takes to arrive.
            http=protocol,
            # asyncio, named: the loop's exception handler matches asyncio's own message, which "auto" would
            # swap for uvloop's wherever that is installed.
            loop="asyncio",
            # No WebSocket routes: an upgrade would carry the request timer into the socket.
            ws="none",
            ssl_certfile=cert_file if self._tls else None,
            ssl_keyfile=key_file if self._tls else None,
        )
        self._server = Server(config, protocol.loop_exception)
        # On a thread uvicorn installs no signal handlers of its own (it would
        # re-raise SIGTERM after shutdown and the process would not exit 0).
        self._thread = threading.Thread(target=self._server.run, name="eventpipe-api", daemon=True)

    @property
    def port(self) -> int:
        """The bound port once started: the one asked for, or the one the system chose for 0."""
        for server in getattr(self._server, "servers", None) or ():
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        # As this host reaches it: "http://:::8000" was printed for EVENTPIPE_API_HOST=::, and failed in curl.
        return f"{'https' if self._tls else 'http'}://{address(self._host, self.port)}"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = 15.0, flag: str = "") -> None:
        """Start serving; raise ConfigError if it is not listening within `timeout`. `flag`: the command's own
        option for the port, named beside the variable in an error."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                if (cause := unlistenable(self._host)) is not None:
                    raise ConfigError(
                        f"the API could not listen on {self._host}:{self._port}: {cause}; set EVENTPIPE_API_HOST "
                        "to a name or address of this host"
                    )
                raise ConfigError(
                    f"the API could not listen on {self._host}:{self._port}; pick another port "
                    f"(EVENTPIPE_API_PORT{f', or {flag}' if flag else ''})"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)


def _check_pair(cert_file: Path | None, key_file: Path | None) -> None:
    """Load them now: uvicorn would fail on its own thread, and only say that it could not listen."""

    def no_pass_phrase() -> str:
        # Called only for an encrypted key. Without it OpenSSL asked for the pass phrase on the terminal and
        # waited there, or, with no terminal, failed with "[Errno 22] Invalid argument". uvicorn loads the
        # pair again without a pass phrase, so an encrypted key must stop the start here.
        raise ConfigError(
            f"EVENTPIPE_API_TLS_KEY_FILE {key_file} is encrypted: give an unencrypted key "
            "(openssl pkey -in KEY -out NEW_KEY asks for its pass phrase once and writes it without one)"
        )

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert_file), str(key_file), password=no_pass_phrase)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot serve HTTPS with {cert_file} and {key_file} (EVENTPIPE_API_TLS_CERT_FILE, "
            f"EVENTPIPE_API_TLS_KEY_FILE): {exc}"
        ) from exc
