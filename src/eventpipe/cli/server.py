"""The HTTP API served by uvicorn on a thread, so the command's own signal handling decides the exit."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from eventpipe.errors import ConfigError


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._host, self._port = host, port
        # lifespan off: the app has no startup work; logs at warning: eventpipe logs its own lines.
        # No log_config: uvicorn's lines go through eventpipe's handler, which redacts them.
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        # On a thread uvicorn installs no signal handlers of its own (it would
        # re-raise SIGTERM after shutdown and the process would not exit 0).
        self._thread = threading.Thread(target=self._server.run, name="eventpipe-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; raise ConfigError if it is not listening within `timeout`."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the API could not listen on {self._host}:{self._port}; pick another --api-port")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
