"""The save of `up`'s Mosquitto: its persistence file, asked for and checked.

A new file is no proof of a save: Mosquitto 2.0 renames one it failed to write in full into place
(stack.persistence), and one that cannot write at all says so only in its log or on its stderr.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from eventpipe.errors import BrokerError
from eventpipe.stack import persistence, tail
from eventpipe.stack.broker import effective_user
from eventpipe.stack.child import ChildProcess

log = logging.getLogger(__name__)

# How Mosquitto reports a failed save, in its log or, when it cannot write that, on stderr: 2.0 ends each
# failure with "Error: <strerror>."; 2.1 (libcommon/file_common.c, persist_write.c) has no such line and says
# "Error saving in-memory database, unable to <step> <file>, error <strerror>" or, for a write that failed
# part way, "Error during saving in-memory database <file>: <strerror>.". Each gives the strerror.
SAVE_ERROR = re.compile(
    rb"^\d+: (?:Error: (.*)"
    rb"|Error saving in-memory database, .*, error (.*)"
    rb"|Error during saving in-memory database .*: (.*))$",
    re.MULTILINE,
)


class Save:
    """The persistence file of the Mosquitto `child` run from `directory` as `binary`."""

    def __init__(self, child: ChildProcess, directory: Path, binary: str) -> None:
        self._child = child
        self._directory = directory
        self._binary = binary
        self.database = directory / "data" / "mosquitto.db"
        # Where Mosquitto writes a save before renaming it into place.
        self.saving = self.database.with_name(self.database.name + ".new")
        self._reports = (directory / "mosquitto.log", directory / "mosquitto.stderr")

    def now(self, timeout: float, stop: Callable[[], bool]) -> None:
        """Ask for a save (SIGUSR1) and wait until it is written; raise BrokerError when it cannot be.

        One cut short (a full disk) is logged as an error: reads are still served. One that is only slow
        (a large queue) is waited for no longer than `timeout`, nor once `stop()` is true.
        """
        before = identity(self.database)
        offsets = [tail.size(path) for path in self._reports]
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
            if identity(self.database) != before:
                cut = persistence.examine(self.database)
                if cut is not None:
                    # Said, not raised: on a full disk reads are still served, and what the broker holds is
                    # kept as long as it runs; its stop says so again, and the disk alerts page.
                    log.error(
                        "mosquitto cut short its save: %s: %s. Free space on the disk of %s (--data-dir, or "
                        "EVENTPIPE_DATA_DIR): until then a killed broker loses its queue; see %s",
                        cut.summary(),
                        cut.meaning(),
                        self._directory,
                        self._reports[0],
                    )
                return
            if stop():
                return  # a stop was asked for: the clean stop saves it anyway
            # Read before asking whether it still runs: a broker that failed its save may then crash.
            error = self._error(offsets)
            if error:
                raise BrokerError(
                    f"mosquitto, run as user {effective_user()!r}, cannot write its persistence file "
                    f"{self.database}: {error}; it must be able to write in {self._directory} "
                    "(--data-dir, or EVENTPIPE_DATA_DIR)"
                )
            if exited is not None:
                raise BrokerError(f"mosquitto exited when asked to save {self.database}; see {self._reports[0]}")
            time.sleep(0.02)
        log.warning(
            "mosquitto did not write %s within %.0fs of being asked to: until it does, a killed broker comes "
            "back without the worker's session",
            self.database,
            timeout,
        )

    def _error(self, offsets: list[int]) -> str | None:
        """The error a report gives since its offset, each offset moved on past the whole lines read: a
        burst of connections can log more between two polls than one read takes, and the error must still
        be found where it is, not only in the newest lines."""
        for index, path in enumerate(self._reports):
            written = tail.since(path, offsets[index]) or b""
            found = SAVE_ERROR.search(written)
            if found:
                reason = found.group(found.lastindex or 0).rstrip(b"\r")  # the one alternative that matched
                return reason.decode(errors="replace") + ("" if reason.endswith(b".") else ".")
            ends = written.rfind(b"\n") + 1
            offsets[index] += ends or (len(written) if len(written) == tail.READ_BYTES else 0)
        return None

    def at_stop(self, timeout: float) -> bool:
        """Stop the broker with SIGTERM, which makes Mosquitto save, and wait: `timeout` without a save under
        way, as a save of a large queue takes longer (a backlog of 60 KB events wrote 3 GB). False, and said,
        when a broker that ran did not write the file anew, or wrote it cut short: on a full or read-only disk
        it exited as after a save, and the worker had just logged that its unacknowledged messages would come
        back."""
        before, ran = identity(self.database), self._child.running()
        # A save's new file is there until it is renamed into place, after the fsync, which on a busy disk goes
        # on long after the file has stopped growing.
        self._child.stop(timeout, busy=self.saving.exists)
        if not ran:
            return True
        if identity(self.database) != before:
            cut = persistence.examine(self.database)  # renamed into place whether whole or not
            if cut is None:
                return True
            log.error(
                "mosquitto's save at its stop was cut short: %s: %s. Free space on the disk of %s; until the "
                "file is moved aside, `up` refuses to start on it (but for an empty one), and says how",
                cut.summary(),
                cut.meaning(),
                self._directory,
            )
            return False
        since = "ever" if before is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before[1] / 1e9))
        log.error(
            "mosquitto did not save its queue at its stop (%s is its save of %s; see %s): what it acknowledged "
            "since is lost, the worker's unacknowledged messages with it. Check the disk of %s",
            self.database,
            since,
            self._reports[0],
            self._directory,
        )
        return False


def identity(path: Path) -> tuple[int, int] | None:
    """Which file `path` is: Mosquitto writes a new one and renames it into place on each save."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns
