"""Erasure by user: every stored row of a user's events and the dead letters naming them (the audit
records each: store.audit).

Rows go by lightweight DELETE (store.deletion), each waited for (its mutation polled until done,
failing with its reason), so every read that follows shows none of them: a deleted row is masked at
once, and the delete gives every part of the table a new name, so the tally
counts its buckets again (store.tally). Tables are emptied in an order that
keeps what finds the rest until last: the first-time index (no user column)
by the keys events_by_user holds, then every table with a user_id
column, `arrivals` (the feed's) before `events` (every other read's), so that
the feed never serves an event /events has forgotten, even while the deletes
run; the user's rows in events_by_user last (after the second pass below),
so a call cut short is finished by calling again. An event goes whole, every copy of it, when any copy names the user
(SHARED, OTHER_COPIES).

An erasure takes the events received before it started (the cut). A batch
lands in `events` and the tables beside it one after another, so one that
commits while the tables are emptied one by one would stay in those emptied
before it: an attack found /feed serving 200 events that /events no longer
had. So after a first pass the erasure waits until every live worker's mark
(store.mark.complete_before) passes the cut, bounded by SETTLE_S, and then
deletes what is left of the user's rows received before the cut. Events
received after the cut are left whole in every table. The dead letters that
go are those whose payload names the user (MENTIONS), before that second pass:
a dead-letter replay in another API process that read some of them stores
their events, received before the cut, whenever it gets there, so the erasure
waits for every replay running once they are gone (store.mark.RUNNING_REPLAYS,
bounded by REPLAY_WAIT_S) and the second pass deletes what they stored. The letters' outcomes go
after that wait, as every outcome whose letter is gone (ORPHAN_OUTCOMES), so also those such a replay
recorded after the letters went. Every value is a bound
parameter, and every delete reads the id and its patterns from erasure_keys by
a token instead (store.concealment), and so does every read: ClickHouse keeps a mutation's command, values
written in, long after it is done, and a server logs every statement so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.errors import BusyStorageError
from eventpipe.store.concealment import ABANDONED_MS, BY_RESTORE, ENDED_MS, concealed, hide, release
from eventpipe.store.deletion import (
    BY_KEY,
    CUT,
    INDEX,
    LETTERS_BY_ID,
    ORPHAN_OUTCOMES,
    ORPHANS,
    OTHER_COPIES,
    OTHERS_IN_INDEX,
    USER_TABLES,
    USERS,
    UserTable,
    delete,
    delete_statement,
    user_rows,
)
from eventpipe.store.disk import room_for_delete
from eventpipe.store.failure import classified
from eventpipe.store.letter import named_letters
from eventpipe.store.mark import MARKS_QUERY, REPLAY_STALE_MS, complete_before, running_replays
from eventpipe.store.mention import numbered_mentions
from eventpipe.store.query import quoted
from eventpipe.store.schema.version import REBUILT, REFILLED

log = logging.getLogger("eventpipe")

# Workers store a mark after a batch at most once a second, and alone every two
# seconds while idle (ingest.mark): a few seconds see every live one past the cut.
SETTLE_S = 10.0
SETTLE_POLL_S = 0.2
# A replay call examines 10,000 letters at most, in chunks of 8 MiB: seconds, a minute on a slow store.
REPLAY_WAIT_S = 60.0
# A migration that copies a table (store.swap's Rebuild and Refill) may
# copy a user's rows after they were deleted here and swap the copy in: an
# erasure refuses to start while such a copy exists, and fails (to be called
# again) if a table was swapped under it, which changes the table's UUID.
COPIES = (REBUILT, REFILLED)
TABLES = "SELECT name, uuid FROM system.tables WHERE database = currentDatabase()"
# The most users one erasure takes: its deletes read the set, and its hidden values hold each user's patterns.
AT_ONCE = 1_000
# The events each user of a call's set loses, each event counted once: one whose copies name several of
# them is the first one's, in the set's order, as erasing them one after another counted it. Counted per
# user, an event re-sent under two users a restore's redo erased together was in both records, and the
# restore said it erased again more events than went. Each user's place by transform(), which looks it up in a
# hash table: indexOf() walked the set for every row, 5.3 s against 0.4 s for 1,000 users of 2,000 events each.
PLACE = "transform(user_id, {users:Array(String)}, range(1, length({users:Array(String)}) + 1), 0)"
EVENTS_OF_EACH = (
    f"SELECT first_user, count() FROM (SELECT argMin(user_id, {PLACE}) AS first_user"  # noqa: S608
    f" FROM {INDEX} FINAL WHERE user_id IN {USERS} AND {CUT} GROUP BY timestamp, event_type, event_id)"
    " GROUP BY first_user"
)


def _within(seconds: float, done: Callable[[], bool]) -> bool:
    """Whether `done()` (a read of the store) comes true within `seconds`, asked every SETTLE_POLL_S."""
    deadline = time.monotonic() + seconds
    while True:
        with classified():
            if done():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(SETTLE_POLL_S)


class Erased(NamedTuple):
    # What this call deleted, counted in the user index before its rows there go last: after a call cut
    # off past that point, the one that finishes it counts 0 events (README.md, "erasure").
    events: int
    dead_letters: int
    # False: a live worker had not reported committing what it received before the cut within
    # SETTLE_S, or a dead-letter replay running in any API process had not ended within REPLAY_WAIT_S,
    # so a batch it holds may yet store some of the user's events: erase again later.
    complete: bool = True


class Eraser:
    def __init__(self, client: Client, embedded: bool = False) -> None:
        self._client = client
        # On the embedded engine (chdb://) only this process can reach the store: a replay marked by
        # another has ended with it, killed or not, and is not waited for (store.mark.PROCESS). Before,
        # for 30 minutes after `eventpipe up` was killed during a replay, every erasure waited its
        # minute and answered complete: false. On a server it may run elsewhere.
        self._embedded = embedded
        # Likewise the hidden values of a call before this one: on the embedded engine that call has ended,
        # failed or killed with `up`, and they go at once; a server keeps them a day (store.concealment).
        self._abandoned_ms = ENDED_MS if embedded else ABANDONED_MS

    def erase(self, user_id: str) -> Erased:
        """Delete every row of `user_id`'s events received before now, and the dead letters naming it;
        count them as reads showed them."""
        return self.erase_all([user_id])[0]

    def erase_all(self, user_ids: Sequence[str], held: list[str] | None = None) -> list[Erased]:
        """Erase every user of `user_ids` as `erase` does one, in the same deletes (store.deletion.USERS),
        and what it erased of each, in their order. With `held`, the hidden values' tokens are added to it,
        not released: a restore's redo releases them once its deletes are done for good (store.redo)."""
        if len(user_ids) > AT_ONCE:
            raise ValueError(f"an erasure takes {AT_ONCE:,} users at most, not {len(user_ids):,}")
        cut = time.time_ns() // 1_000_000
        tables = self._tables()
        copying = sorted(name for name in tables if name.endswith(COPIES))
        if copying:
            raise BusyStorageError(f"a migration is copying {copying[0]}: erase again once it has finished")
        room_for_delete(self._client)
        # Left behind by a call that fails: its deletes may still run, and read them. A later erasure removes
        # them once they are done and the call is long over (store.concealment.ABANDONED_MS). Each user's letter
        # patterns named for them (store.mention.numbered): a letter is counted against the user it names.
        users = list(dict.fromkeys(user_ids))
        # Held (a restore's redo): marked as a restore's, which a later attempt of a restore releases.
        marked = {} if held is None else {BY_RESTORE: "1"}
        token = hide(self._client, cut, {"users": users, **numbered_mentions(users), **marked})
        user: dict[str, object] = {"users": users, "cut": cut, "token": token}
        # The user index's rows of the users stay until the end: they give every other table the keys of
        # their events, also of copies other users' batches commit during the first pass.
        user_tables = self._user_tables()
        index = [table for table in user_tables if table.name == INDEX]
        others = [table for table in user_tables if table.name != INDEX]
        self._pass(user, others, everywhere=True)
        settled = self._settle(cut)
        if not settled:
            log.warning(
                "erasure: a worker has not reported committing what it received before the erasure within %.0f s"
                " (one stopped without retiring, or one retrying a slow store): a batch it still holds may keep"
                " some of the user's events in some tables; erase again once every worker is back",
                SETTLE_S,
            )
        # Letters as events: those received before the call, counted once the workers have committed them,
        # just before they go. Counted at the start, and deleted with no cut after the wait, the answer and
        # the audit said 836 letters where 1,211 went. Before
        # the second pass: a replay that read some of them first has stored their events by its end.
        # Each letter counted once, against the first user of the set it names (as one erasure after another
        # counted it), and all of them deleted at once by id (LETTERS_BY_ID): a delete renames every part of the
        # table (a replay adds no letter). Unsettled, a batch may still land some after they were read, and the
        # answer says so (complete: false). Deleted by each user's patterns, one delete per user, those that
        # landed until that delete went too, but 1,000 users took 1,000 deletes (796 s against 18.5 s at 5M
        # events and 100,000 letters).
        dead_letters, found = {}, set[str]()
        # Found for the whole set at once where it can be (store.letter), not by each user's own read of the table.
        naming_each = named_letters(self._client, users, cut, token)
        for user_id in users:
            named = naming_each[user_id] - found
            dead_letters[user_id], found = len(named), found | named
        if found:
            taken: dict[str, object] = {"letters": sorted(found)}
            hide(self._client, cut, taken, token)
            self._delete("dead_letters", LETTERS_BY_ID, {**taken, "cut": cut, "token": token})
        replayed = self._await_replays()
        # The letters' outcomes, once the letters are gone: with them, those a replay that read the letters
        # before they went recorded since (a failure's detail may quote the payload). On every call: a replay
        # past the wait records them later, and a call cut short after the letters leaves them, for the call
        # that finishes the erasure. By the ids left, not the payloads' patterns, which the letters no longer hold.
        if self._count(ORPHANS, {}) > 0:
            self._delete("dead_letter_outcomes", ORPHAN_OUTCOMES, {})
        # What batches and replays committed during the first pass left behind, in the tables that hold any.
        self._pass(user, others, everywhere=False)
        with classified():
            counted = self._client.query(*concealed(EVENTS_OF_EACH, user)).result_rows
        events = {str(user_id): int(str(n)) for user_id, n in counted}
        for table in index:
            self._delete(table.name, delete_statement(table, shared=False), user)
        if held is None:
            release(self._client, cut, token, abandoned_ms=self._abandoned_ms)
        else:
            held.append(token)
        if self._tables() != tables:
            raise BusyStorageError("a migration swapped a table during the erasure: erase again")
        done = {u: Erased(events.get(u, 0), dead_letters[u], settled and replayed) for u in users}
        return [done[user_id] for user_id in user_ids]

    def _pass(self, user: dict[str, object], tables: list[UserTable], everywhere: bool) -> None:
        """Empty `tables` (in USER_TABLES' order) of the user's rows before the cut and of every copy of
        the user's events; not `everywhere`: only the tables that hold some (the first-time index by the
        user's keys), and nothing when none does (a delete renames every part of its table, also when it
        matches no row)."""
        shared = self._count(OTHER_COPIES, user) > 0
        holding = [table for table in tables if everywhere or (shared and table.keyed) or self._holds(table, user)]
        for statement in BY_KEY:
            # Counted by its own keys: a batch committing between the first pass's delete here and those
            # below is gone from every other table, so none of them holding any says nothing of this one.
            if everywhere or self._count("SELECT count() FROM" + statement.removeprefix("DELETE FROM"), user) > 0:
                self._delete("undated_events", statement, user)
        if not holding:
            return
        if shared:
            # First, while the user's rows there still give the keys, which this leaves.
            self._delete(INDEX, OTHERS_IN_INDEX, user)
        for table in holding:
            self._delete(table.name, delete_statement(table, shared), user)

    def _settle(self, cut_ms: int) -> bool:
        """Wait, SETTLE_S at most, until every live worker has committed all it received before the cut."""

        def settled() -> bool:
            row = self._client.query(MARKS_QUERY.sql, parameters=MARKS_QUERY.parameters).result_rows[0]
            return complete_before(row) > cut_ms

        return _within(SETTLE_S, settled)

    def _await_replays(self) -> bool:
        """Wait, REPLAY_WAIT_S at most, until every dead-letter replay running now, in any API process, has
        ended: the user's letters are gone, but one may have read them before. Those started since cannot
        have, so they are not waited for."""
        with classified():
            waiting = running_replays(self._client, self._embedded)

        def ended() -> bool:
            waiting.intersection_update(running_replays(self._client, self._embedded))
            return not waiting

        if _within(REPLAY_WAIT_S, ended):
            return True
        log.warning(
            "erasure: dead-letter replays had not ended within %.0f s (%s): they may store some of the user's"
            " events again; erase again once they have. On a ClickHouse server, one whose API process was killed"
            " counts as running until %d minutes after its last progress",
            REPLAY_WAIT_S,
            ", ".join(sorted(waiting)),
            REPLAY_STALE_MS // 60_000,
        )
        return False

    def _holds(self, table: UserTable, user: dict[str, object]) -> bool:
        sql = f"SELECT count() FROM {quoted(table.name)} WHERE {user_rows(table.cut)}"  # noqa: S608 - quoted
        return self._count(sql, user) > 0

    def _tables(self) -> dict[str, str]:
        with classified():
            return {str(name): str(uuid) for name, uuid in self._client.query(TABLES).result_rows}

    def _user_tables(self) -> list[UserTable]:
        with classified():
            rows = self._client.query(USER_TABLES).result_rows
        # Names from the server's catalogue: quoted wherever they are spliced in, whatever they hold.
        return [UserTable(str(name), bool(cut), bool(keyed)) for name, cut, keyed in rows]

    def _count(self, sql: str, parameters: dict[str, object]) -> int:
        with classified():
            return int(str(self._client.query(*concealed(sql, parameters)).result_rows[0][0]))

    def _delete(self, table: str, sql: str, parameters: dict[str, object]) -> None:
        delete(self._client, table, sql, parameters, SETTLE_POLL_S)
