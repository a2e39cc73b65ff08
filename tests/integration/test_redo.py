"""A restore's redo of many erasures (store/redo.py): every user erased since the backup is erased again, each
with what was theirs, in the same deletes."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.errors import BackupError, StorageError
from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.store.audit import Audit, Erasure, user_hash
from eventpipe.store.backup import Backups, Restored
from eventpipe.store.concealment import hide
from eventpipe.store.erasure import Erased, Eraser
from eventpipe.store.redo import Redone, redo_erasures
from eventpipe.store.writer import Writer
from tests.support.api import ERASURE_SECRET

MARCH_MS = 1_772_323_200_000
# More than ClickHouse's multiSearchAny takes (255): a redo of that many users failed every time, so a
# restore after them could never finish.
ERASED = [f"user-{i:03d}" for i in range(300)]
KEPT = "user-0001"  # holds an erased id: a substring match would take it too
# Letters of other users, between the two spellings of one id and the next user to find.
FILLERS = 10_000


def events_of(user: str, count: int) -> list[Event]:
    parsed = [
        parse("events/t", json.dumps({"event_id": f"{user}/{i}", "user_id": user}).encode(), MARCH_MS + i, Limits())
        for i in range(count)
    ]
    assert all(isinstance(event, Event) for event in parsed)
    return parsed


def letter_of(user: str, i: int) -> Rejection:
    parsed = parse(
        "events/bad", json.dumps({"user_id": user, "timestamp": "x", "n": i}).encode(), MARCH_MS + i, Limits()
    )
    assert isinstance(parsed, Rejection)
    return parsed


def erased_as_the_api_does(client: Client, eraser: Eraser, users: list[str]) -> list[Erased]:
    """Erase `users` together and record each in the audit under the API's key (one insert, to keep tests short)."""
    erased = eraser.erase_all(users)
    now_ms = time.time_ns() // 1_000_000
    Audit(client).record_all(
        [
            Erasure(str(uuid.uuid4()), now_ms, "admin", user_hash(user, ERASURE_SECRET), *e[:2], True)
            for user, e in zip(users, erased, strict=True)
        ]
    )
    return erased


def restored_with_redo(client: Client, backups: Backups, name: str, eraser: Eraser) -> Restored:
    """Restore backup `name` with its redo, as `eventpipe restore` wires it (cli.restore)."""
    return backups.restore(
        name,
        0,
        "test",
        redo=lambda first: redo_erasures(client, name, ERASURE_SECRET, eraser, "eventpipe restore", first),
    )


@pytest.mark.timeout(300)
def test_a_restore_erases_again_hundreds_of_users_each_with_what_was_theirs(client: Client, writer: Writer) -> None:
    # Each user a count of their own, so an audit record counting another's shows.
    owned = {user: 1 + index % 4 for index, user in enumerate(ERASED)}
    writer.insert_events([event for user, count in owned.items() for event in events_of(user, count)])
    writer.insert_events(events_of(KEPT, 6))
    letters = {ERASED[0]: 2, ERASED[7]: 1}
    writer.insert_dead_letters([letter_of(user, i) for user, n in letters.items() for i in range(n)])
    writer.insert_dead_letters([letter_of(KEPT, 99)])
    backups = Backups(client)
    taken = backups.take("test")

    # Erased since the backup, as the API records them (one insert for all, to keep the test short).
    eraser = Eraser(client, embedded=True)
    erased = erased_as_the_api_does(client, eraser, ERASED)
    hashes = {user_hash(user, ERASURE_SECRET): user for user in ERASED}
    assert [e.events for e in erased] == list(owned.values())

    restored = restored_with_redo(client, backups, taken.name, eraser)

    assert restored.redone == Redone(users=300, found=300, events=sum(owned.values()), dead_letters=3, complete=True)
    left = client.query("SELECT user_id, count() FROM events GROUP BY user_id").result_rows
    assert dict(left) == {KEPT: 6}
    kept = client.query("SELECT payload FROM dead_letters").result_rows
    assert [row[0].encode() for row in kept] == [letter_of(KEPT, 99).payload]
    # Each user's own record: their hash, with what was theirs, after every erasure the API recorded.
    audit = client.query(
        "SELECT user_hash, events, dead_letters, ordinal FROM erasures WHERE key_name = 'eventpipe restore'"
    ).result_rows
    assert {hashes[digest]: (events, dead) for digest, events, dead, _ in audit} == {
        user: (owned[user], letters.get(user, 0)) for user in ERASED
    }
    assert sorted(ordinal for *_, ordinal in audit) == list(range(302, 602)), "after the 300 and the restore's own"


def test_a_restore_finds_users_with_dead_letters_only_by_the_user_id_their_json_gives(
    client: Client, writer: Writer
) -> None:
    # Before, a user erased since the backup with no events in it was never found: their letters came back.
    writer.insert_events(events_of(KEPT, 3))
    payloads = {
        "at the top": b'{"user_id": "letters-only", "timestamp": "yesterday"}',
        "in an envelope": b'{"data": {"user_id": "enveloped\\u00e9", "timestamp": 1.5}}',
        "as an integer": b'{"user_id": 913297552, "timestamp": []}',
        # A double's spellings of integers, which the worker refuses as user ids: the engine gives them
        # back as integers (JSONExtractRaw writes a number again from its double).
        "with a fraction": b'{"user_id": 4242.0, "timestamp": "x"}',
        "with an exponent": b'{"event_data": {"user_id": 4.343e3}, "timestamp": "x"}',
        # No JSON: the erasure would take it, but no id can be read from it.
        "in text": b"user_id=in-text-only timestamp=now",
        "kept": b'{"user_id": "user-0001", "timestamp": "x"}',
    }
    letters = []
    for i, payload in enumerate(payloads.values()):
        parsed = parse("events/bad", payload, MARCH_MS + i, Limits())
        assert isinstance(parsed, Rejection)
        letters.append(parsed)
    writer.insert_dead_letters(letters)
    backups = Backups(client)
    taken = backups.take("test")
    users = ["letters-only", "enveloped\u00e9", "913297552", "4242", "4343", "in-text-only"]
    eraser = Eraser(client, embedded=True)
    erased = erased_as_the_api_does(client, eraser, users)
    assert [e.dead_letters for e in erased] == [1, 1, 1, 1, 1, 1]

    restored = restored_with_redo(client, backups, taken.name, eraser)

    assert restored.redone == Redone(users=6, found=5, events=0, dead_letters=5, complete=True)
    kept = sorted(row[0] for row in client.query("SELECT payload FROM dead_letters").result_rows)
    assert kept == sorted([payloads["in text"].decode(), payloads["kept"].decode()])


def test_a_restore_finds_users_with_dead_letters_only_in_the_envelopes_the_worker_is_set_to_read(
    client: Client, writer: Writer
) -> None:
    # EVENTPIPE_ENVELOPE_KEYS names `payload`: the worker takes a user from there, and so does a replay. The
    # redo read only event_data and data, so a user erased since the backup with such letters only was not
    # found, the letters came back, and a replay stored the erased user's events again.
    limits = Limits(envelope_keys=("payload", "event_data", "data"))
    writer.insert_events(events_of(KEPT, 3))
    payload = b'{"payload": {"event_id": "w-1", "user_id": "wrapped-only", "timestamp": "soon"}}'
    parsed = parse("events/bad", payload, MARCH_MS, limits)
    assert isinstance(parsed, Rejection)
    writer.insert_dead_letters([parsed])
    backups = Backups(client)
    taken = backups.take("test")
    eraser = Eraser(client, embedded=True)
    assert [e.dead_letters for e in erased_as_the_api_does(client, eraser, ["wrapped-only"])] == [1]

    restored = backups.restore(
        taken.name,
        0,
        "test",
        redo=lambda first: redo_erasures(
            client, taken.name, ERASURE_SECRET, eraser, "eventpipe restore", first, envelopes=limits.envelope_keys
        ),
    )

    assert restored.redone == Redone(users=1, found=1, events=0, dead_letters=1, complete=True)
    assert client.query("SELECT count() FROM dead_letters").result_rows == [(0,)]


def test_an_event_two_users_erased_again_together_shared_is_counted_once(client: Client, writer: Writer) -> None:
    # A producer re-sent an event under another user: erased one after another, the first erasure took it
    # whole and the second counted none of it. Erased together, each user's record counted it, and the
    # restore said it erased again more events than went.
    first, second = "user-a", "user-b"
    writer.insert_events(events_of(first, 3))
    writer.insert_events([event._replace(user_id=second, received_ms=MARCH_MS + 10) for event in events_of(first, 2)])
    writer.insert_events(events_of(second, 1))
    writer.insert_events(events_of(KEPT, 2))
    backups = Backups(client)
    taken = backups.take("test")
    eraser, audit = Eraser(client, embedded=True), Audit(client)
    counted = {}
    for user in (first, second):  # as the API erases them, one request each
        erased = eraser.erase(user)
        counted[user] = erased.events
        now_ms = time.time_ns() // 1_000_000
        audit.record(Erasure(str(uuid.uuid4()), now_ms, "admin", user_hash(user, ERASURE_SECRET), *erased[:2], True))
    assert counted == {first: 3, second: 1}

    restored = restored_with_redo(client, backups, taken.name, eraser)

    # The backup held 4 events of theirs (the re-sent ones are one event each) and 2 of the kept user.
    assert restored.events == 2
    assert restored.redone == Redone(users=2, found=2, events=4, dead_letters=0, complete=True)
    again = client.query("SELECT user_hash, events FROM erasures WHERE key_name = 'eventpipe restore'").result_rows
    hashes = {user_hash(user, ERASURE_SECRET): user for user in (first, second)}
    assert {hashes[digest]: events for digest, events in again} == counted


def test_a_restore_run_again_after_its_redo_was_cut_short_leaves_no_erased_id_in_the_store(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A redo hides the ids of every user of its set at its start (store.concealment), for its deletes to read.
    # Killed on its third delete (or failing there), it left them all, in clear, in erasure_keys; the same
    # restore run again erased the users, but released only the rows it wrote itself: the 300 ids stayed
    # until some erasure made a day later.
    writer.insert_events([event for user in ERASED for event in events_of(user, 1)])
    writer.insert_events(events_of(KEPT, 2))
    backups = Backups(client)
    taken = backups.take("test")
    eraser = Eraser(client, embedded=True)
    erased_as_the_api_does(client, eraser, ERASED)
    assert client.query("SELECT count() FROM erasure_keys").result_rows == [(0,)]

    def redo(first: int) -> Redone:
        return redo_erasures(client, taken.name, ERASURE_SECRET, eraser, "eventpipe restore", first)

    deletes, real_delete = [], Eraser._delete

    def stopped_on_the_third(self: Eraser, table: str, sql: str, parameters: dict[str, object]) -> None:
        deletes.append(table)
        if len(deletes) == 3:
            raise StorageError("the store went away")
        real_delete(self, table, sql, parameters)

    monkeypatch.setattr(Eraser, "_delete", stopped_on_the_third)
    with pytest.raises(BackupError, match="run this restore again"):
        backups.restore(taken.name, 0, "test", redo=redo)
    monkeypatch.setattr(Eraser, "_delete", real_delete)
    assert client.query("SELECT count() FROM erasure_keys WHERE has(texts, {u:String})", {"u": ERASED[0]}).result_rows
    # The values of an erasure by the API that failed a moment ago: on a server whose API was not stopped, one
    # still running between two deletes, whose next delete would fail for good without them.
    api_call = hide(client, time.time_ns() // 1_000_000, {"users": ["api-call"]})

    restored = backups.restore(taken.name, 0, "test", redo=redo)

    assert restored.redone is not None and restored.redone.found == len(ERASED)
    assert dict(client.query("SELECT user_id, count() FROM events GROUP BY user_id").result_rows) == {KEPT: 2}
    left = client.query("SELECT DISTINCT token FROM erasure_keys").result_rows
    assert left == [(api_call,)], "no id the restore erased left in clear, the API's call's values kept"


def test_the_dead_letters_of_a_set_of_users_go_in_one_delete_each_counted_once(client: Client, writer: Writer) -> None:
    # A delete per user with letters, each renaming every part of dead_letters and waited for: 300 users with a
    # letter each took 30.7 s to erase together, against 2.2 s with none (0.1 s a user), where a restore's redo
    # was to cost about one erasure.
    users = ERASED[:40]
    writer.insert_dead_letters([letter_of(user, i) for user in users for i in range(2)])
    # Naming two of them: counted once, against the first of them in the set, as one erasure after another did.
    naming_both = {"user_id": users[1], "friend": users[0], "timestamp": "x"}
    both = parse("events/bad", json.dumps(naming_both).encode(), MARCH_MS, Limits())
    assert isinstance(both, Rejection)
    writer.insert_dead_letters([both, letter_of(KEPT, 0)])

    erased = Eraser(client, embedded=True).erase_all(users)

    assert [e.dead_letters for e in erased] == [3] + [2] * 39
    assert [row[0].encode() for row in client.query("SELECT payload FROM dead_letters").result_rows] == [
        letter_of(KEPT, 0).payload
    ]
    deletes = client.query("SELECT count() FROM system.mutations WHERE table = 'dead_letters'").result_rows
    assert deletes == [(1,)], "one delete for the letters of every user of the set"
    assert client.query("SELECT count() FROM erasure_keys").result_rows == [(0,)]


def test_a_restore_finds_a_letters_only_user_past_a_page_whose_ids_were_spelt_twice(
    client: Client, writer: Writer
) -> None:
    # The ids the letters give were read a page of raw JSON values at a time (now a block of a stream), and the
    # search stopped once it had as many ids as users to find: one id given both as a string and as an integer
    # counted twice, and the user on the next page was not found, their letters back after the restore.
    spelt = [b'{"user_id": "42", "timestamp": "x"}', b'{"user_id": 42, "timestamp": "x"}']
    # Raw values sort as text: the fillers after both spellings of 42, the user to find after the fillers.
    filler = [json.dumps({"user_id": 500_000 + i, "timestamp": "x"}).encode() for i in range(FILLERS)]
    later = b'{"user_id": 9999999, "timestamp": "x"}'
    letters = [parse("events/bad", payload, MARCH_MS, Limits()) for payload in [*spelt, *filler, later]]
    writer.insert_dead_letters([letter for letter in letters if isinstance(letter, Rejection)])
    assert client.query("SELECT count() FROM dead_letters").result_rows == [(FILLERS + 3,)]
    writer.insert_events(events_of(KEPT, 1))
    backups = Backups(client)
    taken = backups.take("test")
    users = ["42", "9999999"]
    eraser = Eraser(client, embedded=True)
    erased = erased_as_the_api_does(client, eraser, users)
    assert [e.dead_letters for e in erased] == [2, 1]

    restored = restored_with_redo(client, backups, taken.name, eraser)

    assert restored.redone == Redone(users=2, found=2, events=0, dead_letters=3, complete=True)
    assert client.query("SELECT count() FROM dead_letters").result_rows == [(FILLERS,)], "only the fillers"


def test_a_restores_redo_writes_no_id_into_a_servers_debug_log(
    client: Client, writer: Writer, capfd: pytest.CaptureFixture[str]
) -> None:
    # A server logging at debug level (ClickHouse's own configuration logs at trace) writes each read's key
    # condition with its bounds written in: the walk of the restored users paged past the last id read
    # (`user_id > ...`, read from erasure_keys), and every page's first id, a user erased again among them, was
    # in the log ("Key condition: (column 0 in ('user-001', +Inf))"; found by an attack). The engine here sends
    # a query's log lines to this process's stderr when asked for them.
    users = ERASED[:6]
    # The walk read 10,000 ids a page: users sorting before them so that the second page starts past the first.
    fillers = [f"filler-{i:05d}" for i in range(9_999)]
    writer.insert_events([event for user in [*fillers, *users] for event in events_of(user, 1)])
    writer.insert_dead_letters([letter_of(user, 0) for user in [*users, "letters-only"]])
    backups = Backups(client)
    taken = backups.take("test")
    eraser = Eraser(client, embedded=True)
    erased_as_the_api_does(client, eraser, [*users, "letters-only"])
    client.set_client_setting("send_logs_level", "debug")
    capfd.readouterr()

    restored = restored_with_redo(client, backups, taken.name, eraser)

    logged = capfd.readouterr()
    client.set_client_setting("send_logs_level", "fatal")
    assert restored.redone is not None and restored.redone.found == len(users) + 1
    lines = (logged.out + logged.err).splitlines()
    assert any("Key condition" in line for line in lines), "the engine sent its debug log"
    assert [line[:200] for line in lines if any(user in line for user in [*users, "letters-only"])] == []
    assert client.query("SELECT count() FROM erasure_keys").result_rows == [(0,)]
