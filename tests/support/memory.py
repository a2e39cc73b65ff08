"""The peak growth of resident memory over a block (eventpipe.process reads it)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from eventpipe.process import rss_bytes
from eventpipe.store.client import connect


@contextmanager
def peak_growth(*readers: tuple[str, Callable[[], int]], interval: float = 0.002) -> Iterator[dict[str, int]]:
    """The most each memory reader (name, callable returning bytes; this process's RSS by default)
    grew above its start while the block ran, sampled every `interval` seconds and once at the end."""
    readers = readers or (("process", rss_bytes),)
    gc.collect()
    start = {name: read() for name, read in readers}
    peak = dict.fromkeys(start, 0)
    done = threading.Event()

    def sample() -> None:
        while True:
            for name, read in readers:
                peak[name] = max(peak[name], read() - start[name])
            if done.wait(interval):
                return

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        for name, read in readers:
            peak[name] = max(peak[name], read() - start[name])


def engine_settled(dsn: str) -> Callable[[], None]:
    """A call that has the embedded engine (in this process) give its free memory back to the system now.

    The engine hands it back by itself over the following seconds (jemalloc's decay), in steps of 60
    to 90 MiB, so a measure of this process's memory taken meanwhile moves by that much whatever the
    code under test holds. A server's engine is another process: nothing to do."""
    if not dsn.startswith("chdb"):
        return lambda: None
    engine = connect(dsn)
    return lambda: engine.command("SYSTEM JEMALLOC PURGE") and None
