"""The API's reads run directly through the Reader: `python -m eventpipe.bench.query --dsn DSN`.

The baseline of the read benchmark: the Reader methods the routes call, with
the filters the routes pass for each path, so both sides run the very same SQL
(and the same tally for all-time counts), without HTTP. Without --spec it
first picks the sample it reads (an event id and a user of the newest event,
and "now"). Prints one JSON line: the spec, and the latency of every timed run
per endpoint, in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from eventpipe.bench.trickle import Trickle
from eventpipe.events.condition import parse_condition, parse_field
from eventpipe.events.metric import parse_metric
from eventpipe.store.client import connect
from eventpipe.store.feed import Feed, Place
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader

WARMUP = 3
FRANCE = parse_condition("properties.country=FR")
BROWSER, COUNT = parse_field("properties.browser"), parse_metric("count")
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


Read = Callable[[Reader], object]


def endpoints(spec: dict[str, Any]) -> dict[str, tuple[str | None, Read]]:
    """Name -> (path and query string as a client sends them, the Reader call the route makes for them).

    A None path is a read with no endpoint of its own (the total count is
    /stats/event-types' total), timed directly only."""
    now, event_id, user = int(spec["now_ms"]), str(spec["event_id"]), str(spec["user_id"])
    hour, day = now - HOUR_MS, now - DAY_MS
    return {
        "newest page": ("/events?limit=100", lambda r: r.events(EventFilter(), 100)),
        "one event_type": ("/events?event_type=purchase&limit=100", lambda r: r.events(EventFilter("purchase"), 100)),
        "one user_id": (f"/events?user_id={user}&limit=100", lambda r: r.events(EventFilter(None, user), 100)),
        "last hour": (f"/events?since={hour}&limit=100", lambda r: r.events(EventFilter(None, None, hour), 100)),
        "by id": (f"/events/{event_id}", lambda r: r.event(event_id)),
        "types, 24 h": (f"/stats/event-types?since={day}", lambda r: r.event_types(EventFilter(None, None, day))),
        "timeseries 1h, 24 h": (
            f"/stats/timeseries?interval=1h&since={day}&until={now}",
            lambda r: r.timeseries(EventFilter(None, None, day, now), HOUR_MS),
        ),
        "types, all time": ("/stats/event-types", lambda r: r.event_types(EventFilter())),
        "one property, last hour": (
            f"/events?since={hour}&where=properties.country%3DFR&limit=100",
            lambda r: r.events(EventFilter(None, None, hour, where=(FRANCE,)), 100),
        ),
        "feed, first page of 1000": ("/feed?limit=1000", lambda r: Feed(r.run).page(EventFilter(), 1000, Place())),
        "breakdown by browser, 24 h": (
            f"/stats/breakdown?by=properties.browser&since={day}&until={now}",
            lambda r: r.breakdown(EventFilter(None, None, day, now), BROWSER, COUNT, 100),
        ),
        "total count": (None, lambda r: r.count_events()),
    }


def timed(run: object, seconds: float, at_least: int, at_most: int) -> list[float]:
    """Call `run` sequentially for about `seconds` (within [at_least, at_most] calls); return each call's time."""
    assert callable(run)
    for _ in range(WARMUP):
        run()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < at_most and (len(samples) < at_least or time.perf_counter() < deadline):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventpipe.bench.query")
    parser.add_argument("--dsn", required=True, help="the store, e.g. chdb:///path/to/data/clickhouse")
    parser.add_argument("--seconds", type=float, default=5.0, help="per endpoint")
    parser.add_argument("--at-least", type=int, default=10)
    parser.add_argument("--at-most", type=int, default=2_000)
    parser.add_argument("--spec", help="JSON: now_ms, event_id, user_id (default: picked from the newest event)")
    parser.add_argument("--stream-rate", type=float, default=0.0, help="demo events/s written while timing")
    args = parser.parse_args(argv)
    client = connect(args.dsn)
    reader = Reader(client)
    if args.spec:
        spec = json.loads(args.spec)
    else:
        newest = reader.events(EventFilter(), 1)[0]
        spec = {"now_ms": time.time_ns() // 1_000_000, "event_id": newest.event_id, "user_id": newest.user_id}
    results = {}
    with contextlib.ExitStack() as stack:
        if args.stream_rate > 0:
            stack.enter_context(Trickle(client, args.stream_rate))
        for name, (_path, read) in endpoints(spec).items():

            def run(read: Read = read) -> None:
                read(reader)

            results[name] = timed(run, args.seconds, args.at_least, args.at_most)
    print(json.dumps({"spec": spec, "samples": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
