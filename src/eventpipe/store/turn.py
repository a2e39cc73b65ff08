"""One data operation at a time in a process, waited for only so long.

Backups, restores, erasures, dead-letter replays and the listing of backups
take turns: an erasure between a backup's purge and its BACKUP would put the
rows it masks into the backup, and a replay beside an erasure could store an
erased user's event after its delete. A turn is waited for up to a bound,
not for ever: a BACKUP that a stalled disk holds keeps its turn as long as
the engine takes, and every erasure and replay asked for meanwhile held a
thread of the API's pool with nobody told why. Past the bound the caller
learns what runs and since when (BusyStorageError: the API's 503 `busy`,
to retry).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from eventpipe.errors import BusyStorageError

# Longer than an erasure or a replay takes at 10M events here (seconds): those asked for together run one
# after another. A backup of a large store takes minutes; what is asked for meanwhile is told to retry.
WAIT_S = 60.0


class Turn:
    """The one operation running, and how long the others wait for it."""

    def __init__(self, wait_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._wait_s = WAIT_S if wait_s is None else wait_s
        # What runs and since when (monotonic), for the message of those that wait for it in vain.
        self._running: tuple[str, float] | None = None

    @contextmanager
    def taken(self, what: str) -> Iterator[None]:
        """The turn for `what` (such as "a backup"), for the block; BusyStorageError after the wait."""
        if not self._lock.acquire(timeout=self._wait_s):
            # Read without the lock: at worst it names the one that has just finished, of the same kinds.
            running = self._running
            doing = f"{running[0]} has run for {time.monotonic() - running[1]:.0f} s" if running else "another runs"
            raise BusyStorageError(
                f"{what} waited {self._wait_s:g} s for its turn and {doing} (backups and their listing, restores, "
                "erasures and dead-letter replays run one at a time in a process): retry once it has finished"
            )
        self._running = (what, time.monotonic())
        try:
            yield
        finally:
            self._running = None
            self._lock.release()
