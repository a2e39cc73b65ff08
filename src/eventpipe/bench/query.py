"""The API's reads run directly through the Reader: `python -m eventpipe.bench.query --dsn DSN`.

The baseline of the read benchmark: the Reader methods the routes call, with
the filters the routes pass for each path, so both sides run the very same SQL
(and the same tally for all-time counts), without HTTP. Without --spec it
first picks the sample it reads (an event id and a user of the newest event,
and "now"). With --mqtt-url the worker takes a stream from that broker in this
process meanwhile (bench.inflow), as `eventpipe up` does beside its API.
Prints one JSON line: the spec, and the latency of every timed run per
endpoint, in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from eventpipe.bench.inflow import Inflow
from eventpipe.events.condition import parse_condition, parse_field
from eventpipe.events.metric import parse_metric
from eventpipe.heap import settle
from eventpipe.store.client import connect
from eventpipe.store.feed import Feed, Place
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader

WARMUP = 3
STREAM_WAIT_S = 30.0
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


def timed(
    runs: Mapping[str, Callable[[], object]], seconds: float, at_least: int, at_most: int
) -> dict[str, list[float]]:
    """Call every run in turn, round after round, for about `seconds` each (within [at_least, at_most] calls
    each); return each call's time by name.

    In turn, not one read after another, so that a merge, a flush or a burst
    of the stream lands on every read alike, and each read runs after others,
    as in production."""
    if not runs:
        return {}
    for run in runs.values():
        for _ in range(WARMUP):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    deadline = time.perf_counter() + seconds * len(runs)
    while True:
        fewest = min(len(taken) for taken in samples.values())
        if fewest >= at_most or (fewest >= at_least and time.perf_counter() >= deadline):
            return samples
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - started)


def _flowing(inflow: Inflow) -> None:
    """Wait for the stream's first insert: timing before it would compare against a read without an ingest."""
    deadline = time.monotonic() + STREAM_WAIT_S
    while not inflow.stored:
        if (problem := inflow.problem()) is not None:
            raise SystemExit(f"the stream cannot reach this process: {problem}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the stream stored nothing in this process within {STREAM_WAIT_S:.0f}s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventpipe.bench.query")
    parser.add_argument("--dsn", required=True, help="the store, e.g. chdb:///path/to/data/clickhouse")
    parser.add_argument("--seconds", type=float, default=5.0, help="per endpoint")
    parser.add_argument("--at-least", type=int, default=10)
    parser.add_argument("--at-most", type=int, default=2_000)
    parser.add_argument("--spec", help="JSON: now_ms, event_id, user_id (default: picked from the newest event)")
    parser.add_argument("--mqtt-url", help="the worker takes this broker's stream while timing")
    parser.add_argument("--receive-maximum", type=int, default=40_000, help="the worker's MQTT window")
    args = parser.parse_args(argv)
    client = connect(args.dsn)
    reader = Reader(client)
    if args.spec:
        spec = json.loads(args.spec)
    else:
        newest = reader.events(EventFilter(), 1)[0]
        spec = {"now_ms": time.time_ns() // 1_000_000, "event_id": newest.event_id, "user_id": newest.user_id}
    reads = endpoints(spec)
    # The rounds hold what the API side's hold: reads with an endpoint. The others are timed after them.
    rounds = {name: partial(read, reader) for name, (path, read) in reads.items() if path}
    others = {name: partial(read, reader) for name, (path, read) in reads.items() if not path}
    inflow = Inflow(args.mqtt_url, args.dsn, args.receive_maximum) if args.mqtt_url else None
    settle()  # assembled, before its worker starts: as `eventpipe up`, the API side, does
    with contextlib.ExitStack() as stack:
        if inflow is not None:
            stack.enter_context(inflow)
            _flowing(inflow)
        before = inflow.stored if inflow else 0
        results = timed(rounds, args.seconds, args.at_least, args.at_most)
        for name, run in others.items():
            results |= timed({name: run}, args.seconds, args.at_least, args.at_most)
        if inflow is not None:
            problem = inflow.problem()
            if problem is not None or inflow.stored == before:
                why = problem or "nothing more was stored"
                raise SystemExit(f"the stream stopped reaching the store while reads were timed: {why}")
    print(json.dumps({"spec": spec, "samples": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
