"""SIGTERM stops a bench command as Ctrl-C does."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt: the cleanups run (the stack the bench started is
    stopped, its work dir removed) where SIGTERM's default left `eventpipe up` and its broker running on a
    removed directory. scripts/ab.sh, CI time limits and supervisors stop a run with SIGTERM."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
