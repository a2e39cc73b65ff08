"""Whether the broker's persistence file is a whole save: looked at before `up` starts Mosquitto on it and
after each save `up` waits for (stack.mosquitto). Mosquitto 2.0.0 to 2.0.22 rename a save into place even
when writing it failed part way, as on a full disk (stack.snapshot); 2.0.11 then refused to start on it, or
started without a word on the part before the cut (111 of 3,000 queued messages)."""

from __future__ import annotations

import logging
import mmap
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from eventpipe.stack import snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cut:
    """A persistence file that is no whole save."""

    path: Path
    size: int
    mtime: float  # when it was written: names the copy set aside, the same at each refused start
    offset: int | None  # where what can be trusted ends; None for bytes that are no Mosquitto save at all
    what: str = ""  # for those, what they are instead

    @property
    def aside(self) -> Path:
        """Where the remedy moves it: beside it, so that it is kept for inspection on the same disk."""
        kind = "cut" if self.offset is not None else "not-a-save"
        written = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.mtime))
        return self.path.with_name(f"{self.path.name}.{kind}-{written}")

    @property
    def command(self) -> str:
        return f"mv {shlex.quote(str(self.path))} {shlex.quote(str(self.aside))}"

    def summary(self) -> str:
        what = f"cut short at byte {self.offset:,}" if self.offset is not None else self.what
        return f"{self.path} ({self.size:,} bytes), the file the MQTT broker saves its queue in, is {what}"

    def meaning(self) -> str:
        if self.offset is None:
            return (
                "Mosquitto refuses to start on it, and the acknowledged events it held for the worker, if it "
                "was the broker's save, are lost"
            )
        return (
            "a save that failed part way (a full disk), which Mosquitto 2.0 renames into place all the same. "
            "The broker's queue of acknowledged events in it is partly lost: the events queued after the cut "
            "are not in it"
        )

    def refusal(self) -> str:
        """Why `up` does not start the broker on it, and what to do. Never done for the user: the part
        before the cut is all that is left of the queue, for someone to look at before it is given up."""
        aside = f"move the file aside to start with an empty queue, keeping it for inspection: {self.command}"
        if self.offset is None:
            return f"{self.summary()}: {self.meaning()}. To go on, {aside}"
        return (
            f"{self.summary()}: {self.meaning()}, and Mosquitto would refuse to start on it or start on the "
            f"part before the cut without a word. Free space on the disk of {self.path.parent} first, or the "
            f"next save is cut short too; then {aside}"
        )


def examine(path: Path) -> Cut | None:
    """The file at `path` as a Cut; None when it is a whole save, is not there, cannot be read here (the
    broker's own error says why better: a directory in its place), or is of a format this does not read.

    Mapped, not read: a queue of 60 KB events saved 3 GB, and only each chunk's header and fixed part are
    looked at (0.7 s for a million chunks, half a million queued messages)."""
    try:
        handle = path.open("rb")
    except OSError:
        return None
    with handle:
        found = os.fstat(handle.fileno())
        try:
            offset = _cut_at(handle.fileno(), found.st_size)
        except snapshot.OtherFormat as exc:
            log.warning("%s is %s: not checked for a save cut short", path, exc)
            return None
        except OSError as exc:  # a filesystem that cannot map files: left to the broker, as before this check
            log.warning("%s cannot be mapped (%s): not checked for a save cut short", path, exc.strerror or exc)
            return None
        except snapshot.NotASave as exc:
            return Cut(path, found.st_size, found.st_mtime, None, str(exc))
    return None if offset is None else Cut(path, found.st_size, found.st_mtime, offset)


def _cut_at(descriptor: int, size: int) -> int | None:
    if size == 0:
        return 0  # an empty file cannot be mapped
    with mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ) as mapped:
        # Read once, front to back: the kernel reads ahead, and may drop the pages behind.
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        return snapshot.cut_at(mapped)
