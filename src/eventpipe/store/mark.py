"""The workers' marks as the store's readers take them: the instant before which every live worker
has committed everything it received (ingest.mark writes them; the arrival feed's complete_until and
an erasure's wait for in-flight batches read them)."""

from __future__ import annotations

from collections.abc import Sequence

from eventpipe.store.query import Query

# The newest mark of each worker, and the server's clock for workers that have none yet.
MARKS_QUERY = Query(
    "SELECT toUnixTimestamp64Milli(now64(3)), groupArray((complete_before, retired)) FROM"
    " (SELECT argMax(complete_before, written) AS complete_before, argMax(retired, written) AS retired"
    " FROM worker_marks GROUP BY worker)",
    {},
)


def complete_before(marks: Sequence[object]) -> int:
    """From MARKS_QUERY's row: the instant before which every live worker committed all it received."""
    now_ms, newest = marks
    before = int(str(now_ms))
    for committed, retired in newest:  # type: ignore[attr-defined]
        if not int(str(retired)):
            before = min(before, int(str(committed)))
    return before
