"""The deletes of an erasure: what each takes, as SQL (the users' rows of every table with a user_id
column, every copy of their events found by key through the user index, the dead letters naming a
user, all received before the erasure's cut), and one delete run and waited for until it is done.
store.erasure runs them, in its order.

An erasure takes a set of users, one for the API, every user to erase again for a restore's redo: each
delete scans its whole table, whatever it takes, so a set costs about what one user does (one after
another, a restore's redo took about 3 s a user at 5M events: 50 minutes for 1,000).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BusyStorageError
from eventpipe.store.concealment import concealed
from eventpipe.store.disk import room_for_delete
from eventpipe.store.failure import classified
from eventpipe.store.mention import MENTIONS
from eventpipe.store.query import quoted

# The erasure's users, as a set: IN builds it once per statement, and the user index's primary key and the
# bloom filters on user_id skip by it. has() over the same array scanned it for every row: 28 s at 10M rows
# for 1,000 ids, against 0.05 s.
USERS = "(SELECT arrayJoin({users:Array(String)}))"
# The rows an erasure takes: those received up to its start.
CUT = "received_at <= fromUnixTimestamp64Milli({cut:Int64}, 'UTC')"
# The dead letters an erasure takes: those naming one user, received before the call.
LETTERS = f"({MENTIONS}) AND {CUT}"
# The letters of a set's users, once each user's were found by LETTERS: one delete, by the letters' ids (hidden as
# any value is, store.concealment), where one delete per user renamed every part of the table each time (300 users
# with a letter each: 30.7 s, against 2.2 s with none).
LETTERS_BY_ID = (
    "DELETE FROM dead_letters WHERE dead_letter_id IN (SELECT arrayJoin({letters:Array(String)}))"  # noqa: S608
    f" AND {CUT}"
)
# Outcomes whose letter is gone: those of the letters an erasure deleted, also a replay's recorded after
# (and of letters the retention dropped first, which no read shows either). Counted before they are
# deleted: a delete renames every part of its table, also when it matches no row.
GONE = "dead_letter_id NOT IN (SELECT dead_letter_id FROM dead_letters)"
ORPHANS = f"SELECT count() FROM dead_letter_outcomes WHERE {GONE}"  # noqa: S608 - constants
ORPHAN_OUTCOMES = f"DELETE FROM dead_letter_outcomes WHERE {GONE}"  # noqa: S608 - constants
# Not waited for by ClickHouse, which waits for good (on a full disk an erasure hung 11 minutes, and every
# admin call queued behind it): each delete's mutation is polled here until done, so the answer still
# comes only once every read shows the rows gone, and a delete ClickHouse cannot apply fails with its reason.
# And each scalar subquery (the values it reads from erasure_keys, store.concealment) evaluated as the mutation
# runs, not before it is stored: with mutations_execute_subqueries_on_initiator on (a server's profile may
# set it, for Replicated tables), ClickHouse stored the command with the subqueries' results written in, and
# an unsettled erasure's letter deletes, one per user by its patterns, left the id and its patterns in
# system.mutations and mutation_N.txt (found by an attack). Every delete now reads its values inside an IN
# subquery, which that setting left as it was, but no later delete may depend on that.
DELETE_SETTINGS = {"lightweight_deletes_sync": 0, "mutations_execute_subqueries_on_initiator": 0}
DELETE_TIMEOUT_S = 300.0
MUTATIONS = "SELECT mutation_id FROM system.mutations WHERE database = currentDatabase() AND table = {table:String}"
# The table's unfinished mutations, this delete's marked: it is done when none of its own is left, but
# ClickHouse applies a table's mutations in order, so an older one failing (one by hand) holds it up too.
PENDING = (
    "SELECT mutation_id NOT IN {before:Array(String)}, mutation_id, latest_fail_reason FROM system.mutations"
    " WHERE database = currentDatabase() AND table = {table:String} AND NOT is_done"
)
# The user index: the user's rows in it are deleted last, as they give every other delete its keys.
INDEX = "events_by_user"
# Indexes without a user column, emptied by key before the rows that give the keys. The id lookup,
# a projection of events, keeps an erased id until its part merges: the lookup then reads events,
# where the delete masks the row, so nothing is served (operations.md, "Erasure: what it cannot reach").
BY_KEY = (
    "DELETE FROM undated_events WHERE (event_id, event_type) IN"  # noqa: S608 - constants
    f" (SELECT event_id, event_type FROM {INDEX} WHERE user_id IN {USERS} AND {CUT})",
)
# Every copy of an event any copy of which names the user, whoever the others name: a producer may
# re-send an event with another user_id or none. `events` keeps one copy of an event, the user index
# and `arrivals` keep every copy, so deleting the user's copies alone left an event whose kept copy
# was the user's gone from /events and still served by /feed and by the other user's page. By key,
# from the user index, whose rows of the user go last.
SHARED = (
    f"(timestamp, event_type, event_id) IN (SELECT timestamp, event_type, event_id FROM {INDEX}"  # noqa: S608
    f" WHERE user_id IN {USERS} AND {CUT})"
)
# Whether any copy of the user's events names another user or none: almost never, and then the
# deletes stay as cheap as the user's rows alone make them (with the key condition always there,
# an erasure of a user of 100 events at 10M took 10.2 to 10.6 s against 5.9 to 8.8; with this
# check 5.6 to 8.5, and 10.6 to 12.9 s for a user ten of whose events had another user's copy).
# `arrivals` holds every copy and is emptied first, `events` the copy reads show: a call cut short
# after `arrivals` finds the copy `events` kept, one cut short after both had deleted them all (the
# user index's others first, see store.erasure's Eraser._pass).
OTHERS = f"{SHARED} AND (user_id IS NULL OR user_id NOT IN {USERS})"
OTHER_COPIES = f"SELECT (SELECT count() FROM arrivals WHERE {OTHERS}) + (SELECT count() FROM events WHERE {OTHERS})"  # noqa: S608
OTHERS_IN_INDEX = f"DELETE FROM {INDEX} WHERE user_id NOT IN {USERS} AND {SHARED} AND {CUT}"  # noqa: S608
# Found, not listed: a table added later with a user_id column is erased too;
# with whether it has received_at, which the cut is taken on, and the event key; `arrivals` first
# (read by /feed, which must forget an event no later than /events), events_by_user last, as it gives
# the first-time index and the copies their keys.
USER_TABLES = (
    "SELECT table, countIf(name = 'received_at'), countIf(name IN ('timestamp', 'event_type', 'event_id')) = 3"  # noqa: S608
    " FROM system.columns WHERE database = currentDatabase()"
    " AND name IN ('user_id', 'received_at', 'timestamp', 'event_type', 'event_id') AND table IN"
    " (SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree')"
    " GROUP BY table HAVING countIf(name = 'user_id') > 0"
    f" ORDER BY table = '{INDEX}', table != 'arrivals', table"
)


def user_rows(cut: bool) -> str:
    """The users' rows an erasure takes from a table: those before the cut, or all where no receive time says."""
    return f"user_id IN {USERS}" + (f" AND {CUT}" if cut else "")


class UserTable(NamedTuple):
    """A table with a user_id column; `cut`: it has received_at; `keyed`: it holds events by key."""

    name: str
    cut: bool
    keyed: bool


def delete_statement(table: UserTable, shared: bool) -> str:
    """What an erasure deletes from `table`: the user's rows and, with `shared`, every copy of the
    user's events where it holds events. Never `shared` for the user index, whose keys SHARED reads
    (its other copies go first, OTHERS_IN_INDEX)."""
    rows = user_rows(table.cut)
    if shared and table.keyed:
        rows += f" OR {SHARED}" + (f" AND {CUT}" if table.cut else "")
    return f"DELETE FROM {quoted(table.name)} WHERE {rows}"  # noqa: S608 - quoted, constants


def delete(client: Client, table: str, sql: str, parameters: dict[str, object], poll_s: float) -> None:
    """Run the delete `sql` of `table`'s rows and wait until ClickHouse has applied it, looking again at
    most every `poll_s`; BusyStorageError when it cannot apply it now or it goes on past DELETE_TIMEOUT_S."""
    statement, bound = concealed(sql, parameters)
    with classified():
        before = [str(row[0]) for row in client.query(MUTATIONS, parameters={"table": table}).result_rows]
        client.command(statement, parameters=bound, settings=DELETE_SETTINGS)
    # A delete is usually done within milliseconds: polled at once, then ever less often.
    deadline, pause = time.monotonic() + DELETE_TIMEOUT_S, 0.005
    while True:
        with classified():
            pending = client.query(PENDING, parameters={"table": table, "before": before}).result_rows
        if not any(own for own, _mutation, _reason in pending):
            return
        failing = next(((own, mutation, str(reason)) for own, mutation, reason in pending if str(reason)), None)
        if failing is not None:
            own, mutation, reason = failing
            behind = "" if own else f" (it waits behind the older mutation {mutation}, which fails)"
            # ClickHouse retries it in the background and applies it once the cause is gone.
            raise BusyStorageError(
                f"ClickHouse cannot apply the erasure to {table} now{behind}: {reason.splitlines()[0][:300]}; "
                "it finishes by itself once the cause is gone (a full disk: free space), then erase again "
                "to finish the other tables"
            )
        room_for_delete(client)
        if time.monotonic() > deadline:
            raise BusyStorageError(
                f"erasing from {table} has taken over {DELETE_TIMEOUT_S:.0f} s and goes on: erase again later"
            )
        time.sleep(pause)
        pause = min(pause * 2, poll_s)
