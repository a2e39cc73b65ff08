"""What a child process appended to a file of its own (its log, its stderr), read without holding it open."""

from __future__ import annotations

from pathlib import Path

# How much is read past an offset at once: a flood of connections can make a broker write faster than its
# log is polled, and a poll must stay bounded.
READ_BYTES = 1 << 20


def size(path: Path) -> int:
    """Its size, 0 when it is not there: read once, as a save renames its file away at any moment."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def since(path: Path, offset: int, limit: int = READ_BYTES) -> bytes | None:
    """What was written to `path` past `offset`, `limit` bytes of it at most; None when it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    except OSError:
        return None
