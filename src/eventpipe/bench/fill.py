"""Store many events fast, for the API benchmark: `python -m eventpipe.bench.fill --data-dir D --count N`.

Through the worker's Writer (the same insert the worker does), not through
MQTT: a million events over the broker would take minutes and measure the
ingest again. Rows are demo events, parsed by the contract, then repeated
with fresh ids and timestamps spread over the last day (newest last), so the
table looks like a day of a web shop's traffic. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eventpipe.bench.backlog import demo_messages
from eventpipe.events import Event, Limits, parse
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer

TEMPLATES = 5_000
BATCH = 100_000
DAY_MS = 86_400_000


def events(count: int, now_ms: int) -> list[Event]:
    templates = [parse(topic, payload, now_ms, Limits()) for topic, payload in demo_messages(TEMPLATES)]
    rows = [row for row in templates if isinstance(row, Event)]
    step = DAY_MS // max(count, 1)
    first = now_ms - DAY_MS
    out = []
    for index in range(count):
        base = rows[index % len(rows)]
        moment = first + index * step
        # Unique, UUID-shaped, and cheap: the index and a fixed tail.
        event_id = f"{index:08x}-0000-4000-8000-00000000b3c4"
        out.append(base._replace(event_id=event_id, timestamp_ms=moment, received_ms=moment + 150))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventpipe.bench.fill")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    client = connect(f"chdb://{args.data_dir.resolve()}")
    migrate(client)
    writer = Writer(client)
    started = time.perf_counter()
    rows = events(args.count, time.time_ns() // 1_000_000)
    for start in range(0, len(rows), BATCH):
        refused = writer.insert_events(rows[start : start + BATCH])
        if refused:
            raise SystemExit(f"the table refused {len(refused)} benchmark rows: {refused[0][1]}")
    print(json.dumps({"count": len(rows), "seconds": time.perf_counter() - started}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
