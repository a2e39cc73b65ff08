"""The local Mosquitto of `eventpipe up`: a child process on the config stack.broker writes."""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from eventpipe.errors import BrokerError
from eventpipe.stack import child, persistence
from eventpipe.stack.access import Access, private_file
from eventpipe.stack.broker import BROKER_FILES, effective_user, render_config
from eventpipe.stack.certificate import TlsFiles
from eventpipe.stack.child import ChildProcess, port_free
from eventpipe.stack.journal import Aside

log = logging.getLogger(__name__)

# How Mosquitto 2.0 reports a failed save, in its log or, when it cannot write that, on stderr.
SAVE_ERROR = re.compile(rb"^\d+: Error: (.*)$", re.MULTILINE)
# How much of the log's end is searched for the worker's goodbye (it was written a moment before), and of
# what follows a save request for its error.
GOODBYE_BYTES = 1 << 20


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
        return _size(self.log_file)

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
        return self.directory / "data" / "mosquitto.db"

    @property
    def _saving(self) -> Path:
        """Where Mosquitto writes a save before renaming it into place."""
        return self.database.with_name(self.database.name + ".new")

    def save(self, timeout: float = 30.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Have the broker write its persistence file now (SIGUSR1) and wait until it has.

        Called once the worker has first connected on a new session (a resumed one came from this
        file). Mosquitto saves every 10 s (autosave_interval), so one killed before its first save came
        back with no session for the worker: what producers flushed before the worker subscribed again
        found no subscriber and was dropped, acknowledged (6,480 of 30,000 in an attack). Saved now, a
        killed broker loses at most what came since its last save, as after any autosave. A save that
        fails stops the start: the broker would keep nothing across a restart. One cut short (stack.persistence,
        a full disk) is logged as an error: reads are still served. One that is only slow (a large queue) is
        waited for no longer.
        """
        before = _identity(self.database)
        offsets = [_size(path) for path in self._save_reports()]
        self._child.send(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # First, and read once: a wrapper shell dies of the signal at once, while the broker it started
            # saves a moment later, which read first passed for a save by a broker that runs; and a shell
            # dying between this read and a second one was told as a broker that exited (1 of 8 runs on a
            # loaded machine).
            exited = self._child.returncode
            if exited == -signal.SIGUSR1:
                raise BrokerError(
                    f"{self._binary} was killed by the SIGUSR1 that asks Mosquitto to save: "
                    "EVENTPIPE_MOSQUITTO_BINARY must be mosquitto itself, or a script that ends in `exec mosquitto`"
                )
            if _identity(self.database) != before:
                # A new file is no proof of a save: Mosquitto 2.0 renames one it failed to write in full.
                cut = persistence.examine(self.database)
                if cut is not None:
                    # Said, not raised: on a full disk reads are still served, and what the broker holds is
                    # kept as long as it runs; its stop says so again, and the disk alerts page.
                    log.error(
                        "mosquitto cut short its save: %s: %s. Free space on the disk of %s (--data-dir, or "
                        "EVENTPIPE_DATA_DIR): until then a killed broker loses its queue; see %s",
                        cut.summary(),
                        cut.meaning(),
                        self.directory,
                        self.log_file,
                    )
                return
            if stop():
                return  # a stop was asked for: the clean stop saves it anyway
            # Read before asking whether it still runs: a broker that failed its save may then crash.
            error = self._save_error(offsets)
            if error:
                raise BrokerError(
                    f"mosquitto, run as user {effective_user()!r}, cannot write its persistence file "
                    f"{self.database}: {error}; it must be able to write in {self.directory} "
                    "(--data-dir, or EVENTPIPE_DATA_DIR)"
                )
            if exited is not None:
                raise BrokerError(f"mosquitto exited when asked to save {self.database}; see {self.log_file}")
            time.sleep(0.02)
        log.warning(
            "mosquitto did not write %s within %.0fs of being asked to: until it does, a killed broker comes "
            "back without the worker's session",
            self.database,
            timeout,
        )

    def _save_reports(self) -> tuple[Path, Path]:
        return self.log_file, self.directory / "mosquitto.stderr"

    def _save_error(self, offsets: list[int]) -> str | None:
        """The error a report gives since its offset, each offset moved on past the whole lines read: a
        burst of connections can log more between two polls than one read takes, and the error must still
        be found where it is, not only in the newest lines."""
        for index, path in enumerate(self._save_reports()):
            written = _since(path, offsets[index]) or b""
            found = SAVE_ERROR.search(written)
            if found:
                return found.group(1).decode(errors="replace")
            ends = written.rfind(b"\n") + 1
            offsets[index] += ends or (len(written) if len(written) == GOODBYE_BYTES else 0)
        return None

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
        goodbye = f"Client {client_id} disconnected".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            written = _since(self.log_file, max(self.log_start, self._log_size() - GOODBYE_BYTES))
            if written is None or goodbye in written:
                return
            time.sleep(0.02)
        log.debug("the broker did not log the worker's disconnect within %.0fs; stopping it anyway", timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, which makes Mosquitto save its persistence file, then wait: `timeout` without a save
        under way, as a save of a large queue takes longer (a backlog of 60 KB events wrote 3 GB). False,
        and said, when a broker that ran did not write the file anew, or wrote it cut short: on a full or
        read-only disk it exited as after a save, and the worker had just logged that its unacknowledged
        messages would come back."""
        before, ran = _identity(self.database), self.running()
        # A save's new file is there until it is renamed into place, after the fsync, which on a busy disk goes
        # on long after the file has stopped growing.
        self._child.stop(timeout, busy=self._saving.exists)
        if not ran:
            return True
        if _identity(self.database) != before:
            cut = persistence.examine(self.database)  # renamed into place whether whole or not
            if cut is None:
                return True
            log.error(
                "mosquitto's save at its stop was cut short: %s: %s. Free space on the disk of %s; until the "
                "file is moved aside, `up` refuses to start on it (but for an empty one), and says how",
                cut.summary(),
                cut.meaning(),
                self.directory,
            )
            return False
        since = "ever" if before is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before[1] / 1e9))
        log.error(
            "mosquitto did not save its queue at its stop (%s is its save of %s; see %s): what it acknowledged "
            "since is lost, the worker's unacknowledged messages with it. Check the disk of %s",
            self.database,
            since,
            self.log_file,
            self.directory,
        )
        return False


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file `path` is: Mosquitto writes a new one and renames it into place on each save."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns


def _size(path: Path) -> int:
    """Its size, 0 when it is not there: read once, as a save renames its file away at any moment."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _since(path: Path, offset: int) -> bytes | None:
    """What the broker has written to `path` past `offset`, GOODBYE_BYTES of it at most (a flood of
    connections can write faster than it is polled); None when it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(GOODBYE_BYTES)
    except OSError:
        return None


def find_binary(name: str = "mosquitto") -> str | None:
    return child.find_binary(name)
