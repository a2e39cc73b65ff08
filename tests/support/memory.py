"""The peak growth of resident memory over a block (eventpipe.host reads it)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from eventpipe.host import rss_bytes


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
