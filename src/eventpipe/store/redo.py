"""What a restore leaves to redo, counted on the restored store: the erasures the audit records since the
backup was taken, and the users erased before it that it holds again (store.lineage's order, not clocks);
and the first of those redone.

The audit keeps a keyed hash of each erased user, never the id. A restore that holds the key finds the
users again by hashing every user id the restored events hold (the user index, walked in its own order a
page at a time), and then every user_id the restored dead letters give as JSON (a user with dead letters
only), and erases those whose hash an erasure since the backup names: everything of theirs in the backup
was stored before that erasure, so erasing it all again is what it did. Users erased before
the backup that it holds again are not redone: events of theirs stored after the restore that brought them
back may be wanted, and only the operator knows.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from typing import Any, NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BusyStorageError, StorageError
from eventpipe.events.contract import ENVELOPE_KEYS
from eventpipe.store.audit import Audit, Erasure, user_hash
from eventpipe.store.concealment import release
from eventpipe.store.erasure import AT_ONCE, Eraser
from eventpipe.store.failure import classified
from eventpipe.store.lineage import (
    ERASURES_SINCE,
    FINISHED_RESTORES,
    PLACES,
    Place,
    catalogued,
    earliest,
    erased_since,
    from_place,
    hashes_since,
    named,
    recorded,
    returned,
)
from eventpipe.store.naming import taken_ms
from eventpipe.store.query import quoted

log = logging.getLogger(__name__)

# The user ids the restored events hold (an empty id is one), in the user index's order, which its primary key
# gives: read as one stream, a block at a time, no statement of the walk names a user. Paged past the last id
# read (`user_id > {after}`), every page's first id was in a server's logs: in query_log when bound as a
# parameter, and at debug level (ClickHouse's own configuration logs at trace) in the read's key condition,
# even where the statement read it from erasure_keys (found by an attack), a user erased again among them.
USERS = "SELECT DISTINCT user_id FROM events_by_user ORDER BY user_id"
# The user ids the restored dead letters give as JSON, at the top level or in an envelope the worker reads
# (`envelopes`: EVENTPIPE_ENVELOPE_KEYS, the worker's and the replay's), as raw JSON values (a string or an
# integer), streamed as USERS is. Only the default envelopes were read: with the setting naming another
# (`payload`), a user erased since the backup whose letters wrap the id there was not found, the letters came
# back, and a replay stored the erased user's events again. A letter that is no JSON, or names the user
# elsewhere, gives none: the erasure would take it, but no id can be read from it.
LETTER_USERS = (
    "SELECT DISTINCT raw FROM (SELECT arrayJoin(arrayConcat([JSONExtractRaw(payload, 'user_id')],"
    " arrayMap(envelope -> JSONExtractRaw(payload, envelope, 'user_id'), {envelopes:Array(String)}))) AS raw"
    " FROM dead_letters WHERE isValidJSON(payload))"
)
# The tables whose mutations read a redo's hidden values, and how many of those mutations are not done.
# Not multiSearchAny, which takes 255 needles at most: a redo of 1,000 users failed there every time.
HOLDS_ONE = "arrayExists(token -> position(command, token) > 0, {tokens:Array(String)})"
MUTATED = (
    "SELECT DISTINCT table FROM system.mutations WHERE database = currentDatabase()"  # noqa: S608 - constants
    f" AND {HOLDS_ONE} ORDER BY table"
)
UNFINISHED = (
    "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"  # noqa: S608
    f" AND {HOLDS_ONE}"
)
# How long they may take on the tables loaded again: a part emptied by a delete is a moment's work.
SETTLE_S = 120.0


class Redone(NamedTuple):
    """The erasures a restore made again: of the users erased since the backup was taken (`users`), those
    whose events or dead letters it held (`found`), with what their erasures deleted."""

    users: int
    found: int
    events: int
    dead_letters: int
    # False: one of them may have missed something (store.erasure.Erased.complete).
    complete: bool


def left_to_redo(client: Client, name: str) -> tuple[int | None, int, int | None, int]:
    """Once a restore of backup `name` is done: the erasures since it and the oldest time among them
    (`erasures_since`), and the users it holds again and since when (`users_returned`); None for a count
    that could not be taken, which the restore that stands is not failed for."""
    erased: int | None = None
    erased_ms, back, since = 0, None, 0
    try:
        erased, erased_ms = erasures_since(client, name)
        back, since = users_returned(client, name)
    except StorageError as exc:
        # The restore stands; the caller says the counts could not be taken, this says why.
        log.warning("restored %s, but could not count the erasures since it: %s", name, exc)
    except KeyboardInterrupt:
        # A stop asked for once the store is whole: said as a count not taken, not as an interruption
        # that left the erasures to redo unsaid.
        log.warning("stopped before counting the erasures to redo: the restore of %s is done", name)
    return erased, erased_ms, back, since


def erasures_since(client: Client, name: str) -> tuple[int, int]:
    """How many erasures the audit records since backup `name` was taken, in the audit's order
    (store.lineage), and the oldest time they were recorded at (0 for none)."""
    with classified():
        sql, parameters = erased_since(*_place(client, name))
        count, oldest = _rows(client, sql, parameters)[0]
    return int(str(count)), int(str(oldest)) if int(str(count)) else 0


def users_returned(client: Client, name: str) -> tuple[int | None, int]:
    """How many users erased before backup `name` was taken it holds again, and since when (store.lineage);
    None for a backup this store's catalog does not list (taken on another host, whose restores this
    store does not know)."""
    with classified():
        restores = [
            (recorded(int(str(o)), int(str(at))), str(backup)) for at, o, backup in _rows(client, FINISHED_RESTORES)
        ]
        catalog = {
            str(backup): catalogued(_ordinal(ordinal), int(str(at))) for backup, at, ordinal in _rows(client, PLACES)
        }
        if name not in catalog:
            return None, 0

        def taken(backup: str) -> tuple[Place, Place]:
            # Exact where the catalog has it; else within the second its name gives.
            return catalog.get(backup) or named(taken_ms(backup))

        since = earliest(name, taken, restores)
        rows = [
            (int(str(at)), recorded(int(str(o)), int(str(at))), str(user), bool(again))
            for at, o, user, again in _rows(client, ERASURES_SINCE, from_place(since))
        ]
    erasures = [(place, user) for _, place, user, again in rows if not again]
    back = returned(name, taken, restores, erasures, [(place, user) for _, place, user, again in rows if again])
    return len(back), min((at for at, _, user, again in rows if user in back and not again), default=0)


def redo_erasures(
    client: Client,
    name: str,
    secret: str,
    eraser: Eraser,
    taken_by: str,
    first: int,
    clock: Callable[[], int] = time.time_ns,
    envelopes: Sequence[str] = ENVELOPE_KEYS,
) -> Redone:
    """Erase again every user erased since backup `name` was taken whose events the restored store holds,
    each recorded in the audit as an erasure by `taken_by`, numbered from `first` on (store.lineage).
    `secret` keys the audit's hashes (EVENTPIPE_ERASURE_SECRET): users erased under another are not found.
    `envelopes` are the objects the worker reads contract fields from (EVENTPIPE_ENVELOPE_KEYS), where a
    user with dead letters only is looked for too."""
    started_ms = clock() // 1_000_000
    with classified():
        sql, parameters = hashes_since(*_place(client, name))
        wanted = {str(row[0]) for row in _rows(client, sql, parameters)}
        held: dict[str, str] = {}
        if wanted:
            with closing(_blocks(client, USERS)) as blocks:
                held = _matching(blocks, wanted, secret)
        if len(held) < len(wanted):
            # Users with dead letters only: by the user_id their letters give as JSON.
            with closing(_blocks(client, LETTER_USERS, {"envelopes": list(envelopes)})) as blocks:
                held |= _matching(blocks, wanted - held.keys(), secret, _user_id)
        found = list(held.values())
    events = dead_letters = 0
    complete = True
    tokens: list[str] = []
    # Erased together, AT_ONCE at a time: each delete scans its table whoever it takes, so a restore's
    # downtime follows how many passes, not how many users.
    for start in range(0, len(found), AT_ONCE):
        users = found[start : start + AT_ONCE]
        erasures = []
        for user_id, erased in zip(users, eraser.erase_all(users, tokens), strict=True):
            digest = user_hash(user_id, secret)
            erasures.append(Erasure(str(uuid.uuid4()), clock() // 1_000_000, taken_by, digest, *erased))
            log.info("erased again user hash %s...: %d events, %d dead letters", digest[:12], *erased[:2])
            events, dead_letters = events + erased.events, dead_letters + erased.dead_letters
            complete = complete and erased.complete
        Audit(client).record_all(erasures, first + start)
    if tokens:
        _settle(client, tokens)
    # And those of any attempt before it, killed or failing in its redo (store.concealment.BY_RESTORE): it left the
    # ids of a whole set there, in clear (300 in tests/integration/test_redo.py), until an erasure a day later.
    release(client, started_ms, *tokens, restores=True)
    return Redone(len(wanted), len(found), events, dead_letters, complete)


def _settle(client: Client, tokens: list[str]) -> None:
    """Load again the tables the redo's deletes ran on, and let those deletes finish there, before their
    hidden values are released. The restore's renumbering (store.numbering) leaves an empty part that this
    process holds inactive and the next one loads as active, numbered below these deletes: they ran again on
    it there, their values released, failed for good, and every later mutation of the table waited behind
    them (no backup, erasure or restore after; found by an attack). Loaded again here, they run on it while
    the values are still there."""
    with classified():
        tables = [str(row[0]) for row in _rows(client, MUTATED, {"tokens": tokens})]
        for table in tables:
            client.command(f"DETACH TABLE {quoted(table)}")
            client.command(f"ATTACH TABLE {quoted(table)}")
        deadline = time.monotonic() + SETTLE_S
        while int(str(_rows(client, UNFINISHED, {"tokens": tokens})[0][0])):
            if time.monotonic() > deadline:
                raise BusyStorageError(
                    f"the deletes of the erasures made again had not finished {SETTLE_S:.0f} s after their tables"
                    " were loaded again"
                )
            time.sleep(0.1)


def _blocks(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Generator[list[str]]:
    """The values `sql` reads, a block of them at a time (the engine's max_block_size, 65,409 rows): one read
    of the table, streamed; closed (`closing`) where the caller stops early, which ends the read."""
    with client.query_row_block_stream(sql, parameters=parameters) as stream:
        for block in stream:
            yield [str(row[0]) for row in block]


def _matching(
    blocks: Iterator[list[str]], hashes: set[str], secret: str, user_id: Callable[[str], str | None] = str
) -> dict[str, str]:
    """The user ids `blocks` give (through `user_id`) whose keyed hash is among `hashes`, by hash: each user
    once, though two values give it (a letter's "42" and 42), and read only until every hash is found."""
    found: dict[str, str] = {}
    for block in blocks:
        for given in filter(None, map(user_id, block)):
            digest = user_hash(given, secret)
            if digest in hashes:
                found[digest] = given
        if len(found) == len(hashes):
            break
    return found


def _user_id(raw: str) -> str | None:
    """The user id a raw JSON value gives, as the worker reads one (events.contract): a string, or an
    integer's text; None for anything else."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _place(client: Client, name: str) -> tuple[bool, int | None, int]:
    """Where backup `name` stands, as store.lineage takes it: whether the catalog lists it, the count of
    erasures and restores recorded before it (None before migration 24), and the time its name gives."""
    rows = _rows(client, f"{PLACES} WHERE name = {{n:String}}", {"n": name})
    return bool(rows), _ordinal(rows[0][2]) if rows else None, taken_ms(name)


def _ordinal(value: object) -> int | None:
    """A catalog row's ordinal_before: None where it was recorded before migration 24."""
    return None if value is None else int(str(value))


def _rows(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
    return client.query(sql, parameters=parameters).result_rows
