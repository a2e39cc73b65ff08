"""heap.settle: the long-running processes collect less often, and still collect cyclic garbage."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from eventpipe.heap import THRESHOLDS

# In a process of its own: settle() changes the collector of the process that calls it.
SCRIPT = textwrap.dedent(
    """
    import gc, weakref
    from eventpipe.heap import settle

    class Node:
        pass

    def cycle():
        node = Node()
        node.self = node
        return weakref.ref(node)

    kept_before = cycle()  # garbage before the start-up collection
    settle()
    print(kept_before() is None, gc.get_threshold(), gc.get_freeze_count() > 0)
    made_after = cycle()
    gc.collect()
    print(made_after() is None)
    """
)


def test_settle_frees_startup_garbage_then_collects_less_often_but_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    before, after = out.splitlines()
    assert before == f"True {THRESHOLDS} True"
    assert after == "True"
