"""The API's SQL run directly through clickhouse-connect: `python -m eventpipe.bench.query --data-dir D`.

The baseline of the API benchmark. The statements come from the Reader's own
query builders, with the parameters the routes pass for `GET /events?limit=100`
and `GET /stats/event-types`, so both sides run the very same SQL. Prints one
JSON line: the latency of every timed run, per endpoint, in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eventpipe.store.client import connect
from eventpipe.store.reader import EventFilter, Query, event_types_query, events_query

# Path and query string as a client sends them, with the query the route builds for them.
ENDPOINTS: dict[str, tuple[str, Query]] = {
    "events": ("/events?limit=100", events_query(EventFilter(), 100)),
    "event_types": ("/stats/event-types", event_types_query(EventFilter())),
}
WARMUP = 3


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
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=5.0, help="per endpoint")
    parser.add_argument("--at-least", type=int, default=20)
    parser.add_argument("--at-most", type=int, default=2_000)
    args = parser.parse_args(argv)
    client = connect(f"chdb://{args.data_dir.resolve()}")
    results = {}
    for name, (_path, query) in ENDPOINTS.items():

        def run(query: Query = query) -> None:
            client.query(query.sql, parameters=query.parameters).result_rows  # noqa: B018 - rows as Python values

        results[name] = timed(run, args.seconds, args.at_least, args.at_most)
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
