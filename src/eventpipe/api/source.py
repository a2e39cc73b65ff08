"""The API's clients of ClickHouse, and how long each waits for an answer before the request gets 503."""

from __future__ import annotations

import functools
import math

from eventpipe.redaction import redact
from eventpipe.store.client import connect
from eventpipe.store.dsn import embedded
from eventpipe.store.reader import Reader

# ClickHouse stops a bounded read at EVENTPIPE_API_QUERY_TIMEOUT_S and says so (422 too_costly): the
# client waits this much longer, so that answer comes first.
MARGIN_S = 5
# The wait is for silence, not for the whole read: the driver has ClickHouse send a progress header every
# (wait - 5) s, and at least every 10 s, while a query runs. A wait over 10 s lets a read README does not
# cut (the feed, the export, the tally's counts) run as long as the server lets it; a server that sends
# nothing at all is given up on after the wait (60 s before, past README's 10 s).
LEAST_WAIT_S = 15
# /readyz's own: a column probe answers in milliseconds, and the image's healthcheck gives up after 3 s.
PROBE_WAIT_S = 2


def wait_s(query_timeout_s: float) -> int:
    """How long the API's reads wait for a word from ClickHouse, given EVENTPIPE_API_QUERY_TIMEOUT_S."""
    return max(math.ceil(query_timeout_s) + MARGIN_S, LEAST_WAIT_S)


def open_reader(dsn: str, query_timeout_s: float, setting: str, query_memory_bytes: int | None = None) -> Reader:
    """The API's Reader of `dsn`, which `setting` names: reads bounded by `query_timeout_s` and every query by
    `query_memory_bytes`, /readyz's probe on a client of its own, and on the embedded engine a client for
    each key's read running at once (store.pool)."""
    make = functools.partial(connect, dsn, timeout_s=wait_s(query_timeout_s))
    origin = f"the store at {redact(dsn)}, set by {setting}"
    more = make if embedded(dsn) else None
    return Reader(make(), query_timeout_s, connect(dsn, PROBE_WAIT_S), more, origin, memory_bytes=query_memory_bytes)
