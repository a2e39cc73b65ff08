"""The garbage collector of eventpipe's long-running processes (worker, API, `eventpipe up`), set once they
are built.

CPython's defaults (a young collection every 700 allocations, a full one whenever a quarter of the heap is
new) suit short scripts. The worker allocates several objects per message and holds a window of them
until their batch is committed, so full collections ran every few batches over everything the process had
imported: a drain of 300,000 events spent 1.1 s of its 5 s collecting (13 full collections of 63 ms, and
1,750 young ones), a fifth of the worker's time, for garbage that is almost never cyclic.
"""

from __future__ import annotations

import gc

# Allocations between young collections (CPython: 700), then young collections per middle one (10), then
# middle ones per full one (10). With these and the start-up heap frozen, the same drain collected in
# 0.27 s, with no full collection; cyclic garbage is still collected, a little later.
THRESHOLDS = (10_000, 50, 100)


def settle() -> None:
    """Collect, then leave what the process has built so far (modules, clients, settings) out of every later
    collection, and collect less often: call it once, after the process is assembled, before it starts."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
