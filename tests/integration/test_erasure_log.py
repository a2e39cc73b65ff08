"""What a ClickHouse server keeps of an erasure in its logs: it writes every statement, its parameters written
in, into system.query_log and its log (system.text_log, the log file), and the request's URL into its log.
So no statement of an erasure, or of a restore's redo, carries a user id: its values go in the data of an insert
into erasure_keys, which no log holds, and every statement reads them from there (store.concealment). Statements are
read from tests/support/clickhouse_http.py, which keeps each one and the parameters sent with it; the debug log
from the embedded engine, which sends a query's log lines to this process when asked for them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.store.audit import Audit, Erasure, user_hash
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.erasure import Eraser
from eventpipe.store.letter import FEW
from eventpipe.store.mention import mentions, spellings
from eventpipe.store.redo import redo_erasures
from eventpipe.store.writer import Writer
from tests.support.clickhouse_http import ClickHouseHttp, migrated

MARCH_MS = 1_772_323_200_000
# More users than store.letter reads one by one: the set's letters are found by group.
NAMED = [f"zq7-erased-{i}" for i in range(FEW + 2)]
NUMBER = "913297552"
SECRET = "s" * 32


def event(i: int, user: str, sent_by: str | None = None) -> Event:
    body = {"event_id": f"e-{sent_by or user}-{i}", "user_id": user, "timestamp": MARCH_MS + i}
    parsed = parse("events/click", json.dumps(body).encode(), MARCH_MS + i, Limits())
    assert isinstance(parsed, Event), parsed
    return parsed


def letter(payload: str, i: int) -> Rejection:
    parsed = parse("events/bad", payload.encode(), MARCH_MS + i, Limits())
    assert isinstance(parsed, Rejection), parsed
    return parsed


def naming(user: str) -> list[str]:
    """Dead letters that name `user`: as JSON, in text, and as a number's double."""
    return [
        json.dumps({"user_id": user, "timestamp": "yesterday"}),
        f"user {user} at /p/1, no json",
        *([f'{{"user_id": {user}.0, "timestamp": "x"}}'] if user.isdigit() else []),
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    with migrated(tmp_path / "clickhouse") as running:
        yield running


def stored(client: Client, users: list[str]) -> None:
    writer = Writer(client)
    writer.insert_events([event(i, user) for user in [*users, "kept"] for i in range(3)])
    # One of their events re-sent under another user: the erasure looks for such copies too.
    writer.insert_events([event(0, "kept", sent_by=users[0])])
    payloads = [payload for user in [*users, "kept"] for payload in naming(user)]
    writer.insert_dead_letters([letter(payload, i) for i, payload in enumerate(payloads)])


def leaks(server: ClickHouseHttp, users: list[str], since: int) -> list[str]:
    """The statements sent since the `since`th whose text or parameters hold one of `users`, or a value made of
    one: its spellings, the patterns its dead letters are found by (a number's too)."""
    made = {user: {user} | {str(v) for v in mentions(user).values() if isinstance(v, str) and v} for user in users}
    for user in users:
        made[user] |= set(spellings(user))
    found = []
    for line in server.statements()[since:]:
        sent = json.loads(line)
        text = "\n".join([sent["query"], *map(str, sent["parameters"].values())])
        if any(value in text for values in made.values() for value in values):
            found.append(line)
    return found


@pytest.mark.parametrize("escape", [False, True], ids=["by-group", "one-by-one"])
def test_an_erasure_sends_no_user_id_in_any_statement_a_server_logs(server: ClickHouseHttp, escape: bool) -> None:
    client = connect(server.dsn)
    users = [*NAMED, NUMBER]
    stored(client, users)
    if escape:
        # A letter that is no JSON and holds an escape sends the set to each user's own read (store.letter).
        Writer(client).insert_dead_letters([letter("text with a \\u0041 escape", 999)])
    since = len(server.statements())

    erased = Eraser(client).erase_all(users)

    # It erased them, reading the values it needed from erasure_keys.
    assert [e.events for e in erased] == [3] * len(users)
    assert [e.dead_letters for e in erased] == [2] * len(NAMED) + [3]
    sent = server.statements()[since:]
    assert any("erasure_keys" in line for line in sent)
    # Not one statement or parameter sent holds an id: only the data of the inserts did.
    assert leaks(server, users, since) == []
    # The other user's own events stay; the copy of an erased user's event sent under their name went.
    left = client.query("SELECT count() FROM events FINAL WHERE user_id = 'kept'").result_rows[0][0]
    assert left == 3


def test_a_restores_redo_sends_no_user_id_it_walks_past_in_any_statement(server: ClickHouseHttp) -> None:
    # Its walk of the users paged past the last id read, bound as a parameter: one erased again among them.
    client = connect(server.dsn)
    users = [*NAMED, NUMBER]
    taken = Backups(client).take("test")
    eraser = Eraser(client)
    erased = eraser.erase_all([*users, "letters-only"])
    now_ms = time.time_ns() // 1_000_000
    Audit(client).record_all(
        [Erasure(str(uuid.uuid4()), now_ms, "admin", user_hash(user, SECRET), 0, 0, True) for user in users]
        + [Erasure(str(uuid.uuid4()), now_ms, "admin", user_hash("letters-only", SECRET), 0, 0, True)]
    )
    assert len(erased) == len(users) + 1
    # What a restore of a backup taken before them brings back (stored here again: the fake server's own
    # restore is no part of this). The walk read 10,000 ids a page: others sorting between the number and the
    # named users, so that the second page starts past the first of those.
    stored(client, users)
    Writer(client).insert_events([event(0, f"filler-{i:05d}") for i in range(9_997)])
    Writer(client).insert_dead_letters([letter(json.dumps({"user_id": "letters-only", "timestamp": "x"}), 0)])
    since = len(server.statements())

    done = redo_erasures(client, taken.name, SECRET, eraser, "eventpipe restore", 100)

    assert (done.users, done.found, done.events) == (len(users) + 1, len(users) + 1, 3 * len(users))
    assert leaks(server, [*users, "letters-only"], since) == []


@pytest.mark.parametrize("escape", [False, True], ids=["by-group", "one-by-one"])
def test_an_erasure_writes_no_user_id_into_a_servers_debug_log(
    client: Client, escape: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    # A server logging at debug level (ClickHouse's own configuration logs at trace) writes each read's key
    # condition with its values written in, also those a statement read from erasure_keys. The engine here
    # sends a query's log lines to this process's stderr when asked for them.
    users = [*NAMED, NUMBER]
    stored(client, users)
    if escape:
        Writer(client).insert_dead_letters([letter("text with a \\u0041 escape", 999)])
    client.set_client_setting("send_logs_level", "debug")
    capfd.readouterr()
    try:
        erased = Eraser(client, embedded=True).erase_all(users)
    finally:
        logged = capfd.readouterr()
        client.set_client_setting("send_logs_level", "fatal")
    assert [e.dead_letters for e in erased] == [2] * len(NAMED) + [3]
    lines = (logged.out + logged.err).splitlines()
    assert any("Key condition" in line for line in lines), "the engine sent its debug log"
    forms = {user for user in users} | {s for user in users for s in spellings(user)}
    assert [line[:200] for line in lines if any(form in line for form in forms)] == []
