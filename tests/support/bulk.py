"""Millions of stored events made inside the engine, for tests that need a store of that size, not its filling.

`eventpipe bench fill` (bench.fill.batches) builds its rows in Python and
writes them through the Writer, as the worker writes: 10M events took 62 to
190 s of a CI process, most of it in Python. Here the engine makes the same
rows from `numbers()`: the demo templates, about 100,000 users, timestamps
spread evenly over the last 90 days, oldest first, fresh ids on every call.
The insert is still one INSERT into `events` per batch, so the materialized
views fill the user and arrival tables as they do for the worker's inserts,
and the parts are as many and as large as the worker's batches make them.
"""

from __future__ import annotations

from clickhouse_connect.driver import Client

from eventpipe.bench.fill import BATCH, SPAN_MS, USER_STRIDE, USERS, id_tail, templates

# bench.fill.batches's rows, column for column, by the row's index `number`.
ROWS = """
INSERT INTO events (event_id, event_type, timestamp, received_at, user_id, topic, properties)
SELECT
    concat(leftPad(lower(hex(bitShiftRight(number, 16))), 8, '0'), '-',
           leftPad(lower(hex(bitAnd(number, 65535))), 4, '0'), {tail:String}) AS event_id,
    {types:Array(String)}[template] AS event_type,
    fromUnixTimestamp64Milli(toInt64({first:Int64} + intDiv(number * {span:UInt64}, {count:UInt64})), 'UTC') AS at,
    at + toIntervalMillisecond(150),
    concat('user-', leftPad(toString(number * {stride:UInt64} % {users:UInt64}), 5, '0')),
    {topics:Array(String)}[template],
    {properties:Array(String)}[template]
FROM (
    SELECT number, (number + intDiv(number, {users:UInt64})) % length({types:Array(String)}) + 1 AS template
    FROM numbers({start:UInt64}, {rows:UInt64})
)
"""


def fill(client: Client, count: int, now_ms: int) -> None:
    """Append `count` events to the store of `client`, in bench.fill's batches."""
    rows = templates(now_ms)
    parameters: dict[str, object] = {
        "tail": id_tail(),
        "types": [row.event_type for row in rows],
        "topics": [row.topic for row in rows],
        "properties": [row.properties for row in rows],
        "first": now_ms - SPAN_MS,
        "span": SPAN_MS,
        "count": count,
        "stride": USER_STRIDE,
        "users": USERS,
    }
    for start in range(0, count, BATCH):
        rows_here = min(BATCH, count - start)
        client.command(ROWS, parameters={**parameters, "start": start, "rows": rows_here})
