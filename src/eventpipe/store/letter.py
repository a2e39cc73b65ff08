"""The dead letters naming each user of an erasure's set, found in one read of the table for many users.

Read one user after another, each user's patterns (store.mention.MENTIONS) ran over every letter: about
37 ms a user over 100,000 letters here, 37 s for the 1,000 users of one call or one batch of a restore's
redo. Now one statement reads the letters once and tries a user's patterns only on a letter that holds
the id (multiSearch, no regular expression) as it is, or, in a letter that is JSON, in one of its strings
once unescaped; every user's patterns are tried, user by user, on the few letters where neither need hold
it (ESCAPED). A letter naming a user in any way MENTIONS takes is one of those, so the answer is what
MENTIONS gives user by user (tests/integration/test_letter.py compares them). Vectorscan (multiMatchAny),
which would run every user's patterns at once, took 50 s and 1.2 GiB to compile them for 100 ids of 250
characters.
"""

from __future__ import annotations

from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from eventpipe.store.deletion import CUT, LETTERS
from eventpipe.store.failure import classified
from eventpipe.store.mention import MENTIONS, mentions, mentions_of, of_each
from eventpipe.store.query import bound_bytes, parameter_chunks

# multiSearchAny and multiSearchAllPositions take 255 needles at most.
NEEDLES = 250
# A JSON string literal, escapes and all: read from the start of a letter that is JSON, each match is one of its
# strings, as every quote outside one opens the next.
LITERAL = r'"(?:[^"\\]|\\.)*"'
# Each letter's text, and, in one that is JSON and holds an escape, its strings once unescaped: there MENTIONS
# finds an id in a whole string however escaped (or, from an escaped quote on, in its end), or where it stands
# as it is in the text (between two strings, where JSON escapes nothing).
READ = (
    "SELECT dead_letter_id, payload, toValidUTF8(payload) AS text, if(position(payload, '\\\\') > 0 AND"  # noqa: S608
    " isValidJSON(payload), arrayStringConcat(arrayMap(s -> JSONExtractString(s), extractAll(payload,"
    f" {{literal:String}})), '\\n'), '') AS unescaped FROM dead_letters FINAL WHERE {CUT}"
)
# Letters any user's patterns may name without either holding the id: an escape in one that is no JSON, or a
# "user_id" written as a double (4.242e3 holds no 4242). Tried user by user with constant patterns: every
# user's patterns tried at once on each of 25,000 letters (patterns read from an array are compiled again for
# each row) took 246 s for 1,000 users.
ESCAPED = (
    "((position(payload, '\\\\') > 0 AND NOT isValidJSON(payload)) OR notEmpty(extractAll(payload, {fraction:String})))"
)
# How much dearer a user's patterns are tried on one letter that holds the id than on every letter in a
# read of their own (measured: 6 against 0.35 microseconds): past that share of pairs, user by user is cheaper.
PAIR_COST = 16


def _needles(chunks: int) -> tuple[str, str]:
    """Whether a letter holds any of a set's ids, given as `chunks` arrays of NEEDLES at most, and the places
    (from 1) of those it holds."""
    needles = [f"{{needles_{k}:Array(String)}}" for k in range(chunks)]
    held = " OR ".join(f"multiSearchAny({t}, {n})" for n in needles for t in ("text", "unescaped"))
    at = {
        t: "arrayConcat(" + ", ".join(f"multiSearchAllPositions({t}, {n})" for n in needles) + ")"
        for t in ("text", "unescaped")
    }
    users = "range(1, {n:UInt32} + 1)"
    return held, f"arrayFilter((i, a, b) -> a + b > 0, {users}, {at['text']}, {at['unescaped']})"


def _pairs(chunks: int) -> str:
    """How many letters before the cut, how many of them ESCAPED, and how many (letter, user) pairs hold the id."""
    _held, places = _needles(chunks)
    return f"SELECT count(), countIf({ESCAPED}), sum(length({places})) FROM ({READ})"  # noqa: S608 - constants


def _named(chunks: int) -> str:
    """The letters before the cut holding any of a set's ids, each with the places (from 1) of the users it names."""
    held, places = _needles(chunks)
    return (
        f"SELECT dead_letter_id, named FROM (SELECT dead_letter_id, arrayFilter(i -> {of_each(MENTIONS)}, {places})"  # noqa: S608
        f" AS named FROM ({READ}) WHERE {held}) WHERE notEmpty(named)"
    )


def _size(user_id: str) -> int:
    """What `user_id`'s values take in a statement's arrays."""
    return sum(bound_bytes(str(value)) for value in mentions(user_id).values())


def named_letters(client: Client, user_ids: Sequence[str], cut_ms: int) -> dict[str, set[str]]:
    """The ids of the dead letters received up to `cut_ms` that name each of `user_ids` (MENTIONS)."""
    found: dict[str, set[str]] = {user_id: set() for user_id in user_ids}
    for group in parameter_chunks(user_ids, _size):
        chunks = [group[start : start + NEEDLES] for start in range(0, len(group), NEEDLES)]
        parameters = {
            **mentions_of(group),
            **{f"needles_{k}": chunk for k, chunk in enumerate(chunks)},
            "n": len(group),
            "cut": cut_ms,
            "literal": LITERAL,
        }
        with classified():
            letters, escaped, pairs = (
                int(str(v)) for v in client.query(_pairs(len(chunks)), parameters=parameters).result_rows[0]
            )
        if pairs * PAIR_COST > letters * len(group):
            # Ids most letters hold (short numbers, single letters): each user's own read is cheaper.
            _user_by_user(client, group, cut_ms, LETTERS, found)
            continue
        if pairs:
            with classified():
                rows = client.query(_named(len(chunks)), parameters=parameters).result_rows
            for letter, places in rows:
                for place in places:
                    found[group[int(place) - 1]].add(str(letter))
        if escaped:
            _user_by_user(client, group, cut_ms, f"{ESCAPED} AND {LETTERS}", found)
    return found


def _user_by_user(client: Client, users: list[str], cut_ms: int, condition: str, found: dict[str, set[str]]) -> None:
    """Add to `found` the letters `condition` (reading MENTIONS' parameters) takes for each of `users`."""
    sql = f"SELECT dead_letter_id FROM dead_letters FINAL WHERE {condition}"  # noqa: S608 - constants
    for user_id in users:
        with classified():
            rows = client.query(sql, parameters={**mentions(user_id), "cut": cut_ms}).result_rows
        found[user_id].update(str(row[0]) for row in rows)
