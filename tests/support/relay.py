"""A TCP relay between a client and a server that a test can cut: a network path that drops connections."""

from __future__ import annotations

import contextlib
import socket
import threading

from eventpipe.port import free_port


class Relay:
    """Listens on 127.0.0.1:`port` and relays each connection to `target`; `cut` closes every live one, both
    sides, as a proxy with an idle timeout or a restarting load balancer would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._server = socket.create_server(("127.0.0.1", free_port()))
        self.port: int = self._server.getsockname()[1]
        self._target = target
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self._target)
            except OSError:
                return
            with self._lock:
                self._live += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def cut(self) -> None:
        with self._lock:
            live, self._live = self._live, []
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._server.close()
        self.cut()
