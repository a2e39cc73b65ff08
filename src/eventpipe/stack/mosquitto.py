"""The local Mosquitto of `eventpipe up`: a child process on the config stack.broker writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from eventpipe.errors import BrokerError
from eventpipe.stack import child, journal, persistence, tail
from eventpipe.stack.access import Access, private_file
from eventpipe.stack.broker import BROKER_FILES, effective_user, render_config
from eventpipe.stack.certificate import TlsFiles
from eventpipe.stack.child import ChildProcess, port_free
from eventpipe.stack.journal import Aside
from eventpipe.stack.save import Save

log = logging.getLogger(__name__)


class Mosquitto:
    """A mosquitto child process on 127.0.0.1:port, with its files under `directory`."""

    def __init__(
        self,
        port: int,
        directory: Path,
        receive_maximum: int,
        binary: str = "mosquitto",
        tls: TlsFiles | None = None,
        *,
        max_payload_bytes: int,
        session_expiry_s: int,
        access: Access | None = None,
    ) -> None:
        self.port = port
        self._session_expiry_s = session_expiry_s
        self._tls = tls
        self._access = access
        self.directory = directory.resolve()
        self._receive_maximum = receive_maximum
        self._max_payload_bytes = max_payload_bytes
        self._binary = binary
        self._child = ChildProcess("mosquitto", port, self.directory, self.directory / "mosquitto.log")
        # The log is kept across restarts: where this run's lines begin.
        self.log_start = 0
        self.own_ids: tuple[str, ...] = ()  # `up`'s own clients' ids, once noted (note_own_ids)
        self._aside = Aside(self.log_file)
        self._save = Save(self._child, self.directory, binary)

    @property
    def url(self) -> str:
        """Where producers publish: anonymous."""
        return f"{'mqtts' if self._tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def worker_url(self) -> str:
        """Where the worker connects: as its user, when the broker has an ACL."""
        return self._access.url(self.url) if self._access else self.url

    @property
    def monitor_url(self) -> str | None:
        """Where the reader of the broker's statistics connects, when the broker has an ACL that lets it."""
        return self._access.monitor_url(self.url) if self._access else None

    def note_own_ids(self, client_ids: Iterable[str]) -> None:
        """Write the client ids of `up`'s own clients to <dir>/own-ids (owner only, as the log that names
        them): the runbook that ends sessions left behind never ends these, though the log lines that name
        them as signed in are set aside with the log past 64 MiB. Kept as `own_ids`, whose takeovers the
        log's reader counts (stack.journal)."""
        self.own_ids = tuple(client_ids)
        private_file(self.directory / "own-ids", "".join(f"{client_id}\n" for client_id in self.own_ids))

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    def start(self, timeout: float = 10.0, inherit_fds: tuple[int, ...] = ()) -> None:
        """Start it and wait until it listens; `inherit_fds` stay open in the broker."""
        path = find_binary(self._binary)
        if path is None:
            where = "is not there" if "/" in self._binary else "is not on PATH"
            raise BrokerError(
                f"{self._binary!r} {where}: install Mosquitto (Debian/Ubuntu: apt-get install mosquitto), "
                "set EVENTPIPE_MOSQUITTO_BINARY to its path, or pass --mqtt-url to use a running broker"
            )
        if not port_free(self.port):
            raise BrokerError(
                f"port {self.port} is already in use (another MQTT broker?): pass --mqtt-port with a free port, "
                f"or --mqtt-url mqtt://127.0.0.1:{self.port} to use the broker that is there once it has the "
                "limits of mosquitto/mosquitto.conf (a stock Mosquitto drops queued messages past 1,000)"
            )
        # Before Mosquitto reads it: it refuses a cut save, or starts on the part before the cut without a word.
        # An empty one holds nothing to look at: Mosquitto starts empty on it, so a start on a disk still full
        # serves reads as before, and the worker counts its session lost (EventpipeWorkerSessionLost).
        cut = persistence.examine(self.database)
        if cut is not None and cut.size > 0:
            raise BrokerError(cut.refusal())
        if cut is not None:
            log.error("%s: %s; the broker starts with an empty queue", cut.summary(), cut.meaning())
        config = self.directory / "mosquitto.conf"
        try:
            (self.directory / "data").mkdir(parents=True, exist_ok=True)
            # Its log and persistence name the worker's session id, which must stay unknown to other local users.
            self.directory.chmod(0o700)
            config.write_text(
                render_config(
                    self.port,
                    self.directory,
                    self._receive_maximum,
                    max_payload_bytes=self._max_payload_bytes,
                    tls=self._tls,
                    access=self._access.write(self.directory) if self._access else None,
                    session_expiry_s=self._session_expiry_s,
                )
            )
        except OSError as exc:  # a traceback said as much, less clearly
            raise BrokerError(
                f"cannot prepare {exc.filename or self.directory} for Mosquitto: {exc.strerror} "
                "(--data-dir, or EVENTPIPE_DATA_DIR)"
            ) from None
        self._aside.before_start()
        offset = self._log_size()
        problem = self._child.start(
            [path, "-c", str(config)],
            timeout,
            inherit_fds,
            unrunnable=": set EVENTPIPE_MOSQUITTO_BINARY to Mosquitto, or to a script whose #! line names an "
            "interpreter that is there, or pass --mqtt-url to use a running broker",
            files=BROKER_FILES,
        )
        if problem:
            raise BrokerError(problem)
        self._await_log(offset)
        self.log_start = self._log_size()

    def _log_size(self) -> int:
        return tail.size(self.log_file)

    def set_aside_log(self, before: Callable[[], None] = lambda: None) -> None:
        """Past 64 MiB (journal.LOG_KEEP_BYTES) while it runs, its log is copied aside as mosquitto.log.1 and emptied
        (journal.Aside), `before` first. Called every half second while `up` runs."""
        if self._aside(before):
            self.log_start = 0

    def _await_log(self, offset: int, timeout: float = 5.0) -> None:
        """Wait until the broker has written its start to its log; stop it and raise if it cannot.

        A broker that cannot write in its directory still listens and acknowledges, with no log and no
        persistence: what it acknowledged is lost at its next restart, and nothing said so.
        """
        deadline = time.monotonic() + timeout
        while self._log_size() <= offset:
            if time.monotonic() > deadline or not self.running():
                why = self._child.explain_stderr()
                self._child.stop()
                raise BrokerError(
                    f"mosquitto, run as user {effective_user()!r}, wrote nothing to its log {self.log_file}: "
                    f"it must be able to write in {self.directory} (--data-dir, or EVENTPIPE_DATA_DIR); "
                    f"its stderr: {why}"
                )
            time.sleep(0.02)

    @property
    def database(self) -> Path:
        return self._save.database

    def save(self, timeout: float = 30.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Have the broker write its persistence file now and wait until it has (stack.save).

        Called once the worker has first connected on a new session (a resumed one came from this
        file). Mosquitto saves every 10 s (autosave_interval), so one killed before its first save came
        back with no session for the worker: what producers flushed before the worker subscribed again
        found no subscriber and was dropped, acknowledged (6,480 of 30,000 in an attack). Saved now, a
        killed broker loses at most what came since its last save, as after any autosave. A save that
        fails stops the start: the broker would keep nothing across a restart.
        """
        self._save.now(timeout, stop)

    def running(self) -> bool:
        return self._child.running()

    def terminate(self) -> None:
        """Ask it to stop (it saves its persistence file) without waiting."""
        self._child.terminate()

    def await_goodbye(self, client_id: str, timeout: float = 3.0) -> None:
        """Wait, briefly, until it has read the DISCONNECT of `client_id`, and so every ack before it.

        The worker's last acks leave its socket just before the broker is told to
        stop, and Mosquitto can exit on SIGTERM before it has handled them (seen
        even after answering a connection opened later): their messages would come
        back on the next start. Its log line is the one sign that it has.
        """
        goodbye = journal.goodbye(client_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            written = tail.since(self.log_file, max(self.log_start, self._log_size() - tail.READ_BYTES))
            if written is None or goodbye.search(written):
                return
            time.sleep(0.02)
        log.debug("the broker did not log the worker's disconnect within %.0fs; stopping it anyway", timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop it, which saves its persistence file; False, and said, when that save was not made whole."""
        return self._save.at_stop(timeout)


def find_binary(name: str = "mosquitto") -> str | None:
    return child.find_binary(name)
