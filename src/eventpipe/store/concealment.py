"""An erasure's user id and patterns kept out of ClickHouse's mutation log.

ClickHouse stores each mutation's command with its bound parameters written
in, in the table's mutation_N.txt and system.mutations, and keeps it after the
mutation is done until finished_mutations_to_keep (100) newer ones of that
table exist, across restarts and OPTIMIZE FINAL: every erasure left the id it
erased, and its dead-letter patterns, in clear text in six tables' logs (found
by an attack). So an erasure writes those values into `erasure_keys` under a
random token, and each of its deletes reads them from there by a scalar
subquery: only the token is in the log. ClickHouse evaluates such a subquery
part by part as it applies the mutation, so the row must outlive every
mutation that reads it: a MergeTree table (a Memory table loses its rows on a
restart, and a mutation still running then would delete nothing and be marked
done), and the row goes only once no unfinished mutation names its token.
Removed by DROP PARTITION, which is no mutation and removes the part's files
at once; an ALTER DELETE would be one, and hold the id again.

A subquery that finds no row gives NULL, which matches no row: a delete reading
a missing row deletes nothing rather than something else.

A server keeps more than mutations: every statement's text, its parameters
written in, goes to its query_log table and to its log (the text_log table, the log
file) as it runs. So an erasure's reads take their values from here too
(`concealed`), not only its deletes: only its INSERT's data, which no log
holds, carries them.
"""

from __future__ import annotations

import json
import re
import secrets

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.writer import INSERT_SETTINGS

KEYS = "erasure_keys"
KEY_COLUMNS = ("token", "name", "text", "texts", "number", "cut_at")
# What a statement may hold as written, as they name no one: the erasure's cut (a time), the token, and
# store.letter's constant pattern and group size.
PUBLIC = frozenset({"cut", "token", "literal", "group_size"})
# What reads a parameter of each type from its row of erasure_keys: arrays of doubles are held as their
# shortest decimals (nan and inf too), which read back as the same double; arrays of arrays as JSON.
_COLUMN = {
    "String": "text",
    "Array(String)": "texts",
    "Float64": "number",
    "Array(Float64)": "arrayMap(x -> toFloat64(x), texts)",
    "Array(Array(String))": "JSONExtract(text, 'Array(Array(String))')",
}
_PARAMETER = re.compile(r"\{(\w+):([^{}]+)\}")
_TOKEN = re.compile(r"[0-9a-f]{32}")
# A call that failed leaves its row for the deletes it left running. Any later erasure removes it, but only
# once no call can still be running: another API process's call of the same user dropped the row of one
# between two deletes, whose next delete then failed (an Array's scalar subquery with no row is an error, not
# NULL), and a delete submitted after the drop could never finish. Each statement of a
# call gives up within minutes (the API's admin client waits 900 s): after a day it has ended, one way or the
# other, and its row serves nothing. Any user's erasure, not only the same user's: a failed call retried at
# once (as its 503 says) left its row, and the id in it, until the same user was erased again a day later.
ABANDONED_MS = 24 * 3600 * 1000
# On the embedded engine (`eventpipe up`) one process alone opens the store, and its calls take turns
# (store.turn): the rows of any call before this one belong to a call that has ended, failed or killed with
# its process, and go now. Left for the day, `up` killed during an erasure kept the erased ids in clear in the
# store after the erasure called again had answered complete (found by an attack).
ENDED_MS = 0
# The mark of a restore's values (store.redo): a restore runs alone (store.restoration), so one that finds such
# values of another attempt finds those of an attempt killed or failed, which nothing reads any more. An
# attempt killed in its redo had left the ids of its whole set there, in clear, for a day. Values of an
# erasure by the API are never taken for them: one running beside a restore on a server (its API not
# stopped) would have lost its values between two deletes, and its next delete failed for good.
BY_RESTORE = "by_restore"
_RELEASED = (
    f"SELECT DISTINCT token FROM {KEYS} WHERE token IN {{own:Array(String)}}"  # noqa: S608
    " OR cut_at < fromUnixTimestamp64Milli({cut:Int64}, 'UTC') - toIntervalMillisecond({abandoned:Int64})"
    f" OR ({{restores:Bool}} AND token IN (SELECT token FROM {KEYS} WHERE name = '{BY_RESTORE}'))"
)
_RUNNING = "SELECT command FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"


def hide(client: Client, cut_ms: int, values: dict[str, object], token: str | None = None) -> str:
    """Write `values` (parameters of an erasure's statements: the ids, their patterns) under a new token, or under
    the erasure's `token` for values found since; return it."""
    token = token or secrets.token_hex(16)
    rows = []
    for name, value in values.items():
        text, texts, number = "", list[str](), 0.0
        if isinstance(value, list) and any(isinstance(item, list) for item in value):
            text = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, list):
            texts = [repr(item) if isinstance(item, float) else str(item) for item in value]
        elif isinstance(value, float):
            number = value
        else:
            text = str(value)
        rows.append([token, name, text, texts, number, cut_ms])
    with classified():
        client.insert(KEYS, rows, column_names=KEY_COLUMNS, settings=INSERT_SETTINGS)
    return token


def concealed(sql: str, parameters: dict[str, object]) -> tuple[str, dict[str, object]]:
    """`sql` reading each of its parameters but the public ones from erasure_keys by `parameters`'
    token, and the parameters it still binds."""

    def read(found: re.Match[str]) -> str:
        name, kind = found.groups()
        if name in PUBLIC:
            return found.group(0)
        if name not in parameters:
            raise ValueError(f"{name} is not among the values hidden for this statement")
        if kind not in _COLUMN:
            raise ValueError(f"{name}: erasure_keys holds no {kind}")
        # `name` is a word: the pattern allows nothing else.
        return f"(SELECT {_COLUMN[kind]} FROM {KEYS} WHERE token = {{token:String}} AND name = '{name}')"  # noqa: S608

    return _PARAMETER.sub(read, sql), {name: value for name, value in parameters.items() if name in PUBLIC}


def release(
    client: Client, cut_ms: int, *tokens: str, restores: bool = False, abandoned_ms: int = ABANDONED_MS
) -> None:
    """Remove the rows of the erasures `tokens`, done, of any call abandoned `abandoned_ms` (a day) before
    `cut_ms`, and with `restores` of every restore's (BY_RESTORE), when no unfinished mutation reads them."""
    parameters = {"own": list(tokens), "cut": cut_ms, "abandoned": abandoned_ms, "restores": restores}
    with classified():
        releasing = [str(row[0]) for row in client.query(_RELEASED, parameters=parameters).result_rows]
        running = [str(row[0]) for row in client.query(_RUNNING).result_rows]
        for found in releasing:
            if _TOKEN.fullmatch(found) and not any(found in command for command in running):
                client.command(f"ALTER TABLE {KEYS} DROP PARTITION '{found}'")
