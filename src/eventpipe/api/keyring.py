"""The keys the API admits: EVENTPIPE_API_KEYS, the key `eventpipe up` generated, and the keys file.

The keys file is looked at (one stat) on every check, and read again when it
changed, so a key is revoked by the next request after its line is removed: no
restart, no thread. The API's key check (api.auth) makes the stat on its event
loop and hands a read to the thread pool. A file that cannot be used at start stops the API; one
that becomes unusable later (a half-written edit, a typo) leaves the keys of
the last good version admitted, logged and counted
(eventpipe_api_keys_file_invalid), and is read again as soon as it changes.
Keeping them, rather than admitting nobody, keeps every partner served through
an operator's typo; the price is that a revocation made in a broken file waits
for the fix, which the log line and the alert say. For the same reason a read
that hangs is waited for READ_WAIT_S at most by each check (a FIFO is refused
unopened); a `stat` that hangs is not bounded: it runs on the event loop.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from eventpipe.api.grant import Grant
from eventpipe.api.keyfile import MAX_FILE_BYTES, Entry, KeyFileError, digest, parse
from eventpipe.errors import ConfigError

log = logging.getLogger(__name__)

# File times come from a coarse clock (a few ms; whole seconds on some file
# systems): a same-size edit within one tick of the last read leaves the stat
# unchanged. For this long after a change the content is compared as well.
RACY_NS = 2_000_000_000


# How long a check waits for a read under way before it goes on with the keys admitted: a read that
# hangs (a FIFO, a dead network mount) held every keyed request, then /readyz, with the pool's threads.
READ_WAIT_S = 1.0


class Stat(NamedTuple):
    """What says a file changed: a new inode (an editor's or a ConfigMap's rename), another size or
    mtime, or another ctime: a chmod, chown or relabel that makes an unreadable file readable again
    changes nothing else, and the failed read's stat kept a revoked key admitted for good."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


class Keyring:
    """Finds the grant of a key, in constant time over every key. Thread-safe."""

    def __init__(self, env_keys: Sequence[str] = (), path: Path | None = None, generated: str | None = None) -> None:
        # Keys from the environment keep every right they always had; the
        # generated one is the operator's of `eventpipe up`, so it is admin too.
        fixed = [Entry(digest(key), Grant(f"env#{number}")) for number, key in enumerate(env_keys, 1)]
        if generated:
            fixed.append(Entry(digest(generated), Grant("up#generated", admin=True)))
        self._fixed = tuple(fixed)
        self._path = path
        self._entries = self._fixed
        self._lock = threading.Lock()
        self._stat: Stat | None = None
        self._content = b""  # sha256 of the bytes read last, good or not
        self._read_ns = 0
        self._reading_since = 0.0  # time.monotonic() of the last read's start
        self.problem: str | None = None  # why the file on disk is not what is admitted
        self.loads = {"loaded": 0, "invalid": 0}
        self.generation = 0  # changes whenever the admitted set does
        if path is not None:
            self._check(first=True)
            if self.problem:
                raise ConfigError(f"EVENTPIPE_API_KEYS_FILE {path}: {self.problem}")

    def grant(self, key: str) -> Grant | None:
        """The grant of `key`, or None, after reading the keys file again if it changed."""
        self.refresh()
        return self.admitted(key)

    def admitted(self, key: str) -> Grant | None:
        """The grant of `key` among the keys admitted now, without looking at the file. Compared as
        digests, against every key every time: how long it takes says nothing about which key, or how
        much of one, matched."""
        return self.admitted_digest(digest(key))

    def admitted_digest(self, offered: bytes) -> Grant | None:
        """The grant of the key whose digest (keyfile.digest) is `offered`, as `admitted`."""
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, offered):
                found = entry.grant
        return found

    def grants(self) -> list[Grant]:
        return [entry.grant for entry in self._entries]

    def refresh(self) -> None:
        """Read the keys file again if it changed since it was read."""
        if not self.stale():
            return
        if not self._lock.acquire(timeout=READ_WAIT_S):
            # The read under way hangs: said once, and counted as a problem, so the alert tells of it.
            if self.problem is None:
                self._fail(f"a read of it has not ended after {READ_WAIT_S:g} s")
            return
        try:
            self._reading_since = time.monotonic()  # at once: a check now waits for this read
            self._check()
        finally:
            self._lock.release()

    def stale(self) -> bool:
        """Whether the keys file may have changed since it was read: one stat, no read."""
        if self._path is None:
            return False
        if self._lock.locked():
            # While a read is under way the stat already says what is being read, not what is
            # admitted: wait for that read rather than use the old keys, unless it hangs.
            return time.monotonic() - self._reading_since < READ_WAIT_S
        return _stat(self._path) != self._stat or self._racy()

    def _racy(self) -> bool:
        return self._stat is not None and self._stat.ctime_ns >= self._read_ns - RACY_NS

    def _check(self, first: bool = False) -> None:
        assert self._path is not None
        found = _stat(self._path)
        if found == self._stat and not self._racy() and not first:
            return  # another thread read it meanwhile
        self._stat, self._read_ns = found, time.time_ns()
        try:
            raw = _read(self._path)
        except OSError as exc:
            self._content = b""  # whatever comes back is read as new
            self._fail(f"cannot read it: {exc.strerror or exc}")
            return
        content = hashlib.sha256(raw).digest()
        if content == self._content:
            return
        self._content = content
        try:
            entries = parse(raw)
            self._overlap(entries)
        except KeyFileError as exc:
            self._fail(str(exc))
            return
        self._entries = self._fixed + tuple(entries)
        self.generation += 1
        self.loads["loaded"] += 1
        self.problem = None
        log.info("EVENTPIPE_API_KEYS_FILE %s: %d keys loaded", self._path, len(entries))

    def _overlap(self, entries: list[Entry]) -> None:
        fixed = {entry.digest: entry.grant.name for entry in self._fixed}
        for entry in entries:
            if entry.digest in fixed:
                generated = fixed[entry.digest] == "up#generated"
                where = "the key eventpipe up generated" if generated else "EVENTPIPE_API_KEYS"
                raise KeyFileError(f"{entry.grant.name!r} is also in {where}, with other rights: keep it in one place")

    def _fail(self, problem: str) -> None:
        first = self.problem is None and self.generation == 0
        self.problem = problem
        self.loads["invalid"] += 1
        if not first:  # at start the API refuses to run instead, with this message
            log.error(
                "EVENTPIPE_API_KEYS_FILE %s: %s; the %d keys loaded before stay admitted until it is fixed",
                self._path,
                problem,
                len(self._entries) - len(self._fixed),
            )


def _stat(path: Path) -> Stat | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return Stat(found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _read(path: Path) -> bytes:
    # Not blocking on open, and only a regular file: opening a FIFO waits for a writer, for good.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "it is no regular file")
        raw = handle.read(MAX_FILE_BYTES + 1)
    return raw
