"""The dead letters naming each user of an erasure's set, found in one read of the table per group of users.

Read one user after another, each user's patterns (store.mention.MENTIONS) ran over every letter: about
38 ms a user over 100,000 letters here, 38 s for the 1,000 users of one call or one batch of a restore's
redo. A set's read tries a user's patterns only on a letter that may name them (a candidate): one holding
the id as it is (multiSearch, no regular expression), or, in a letter that is JSON, in one of its strings
once unescaped, or a "user_id" written as a double that is the user's number. A letter naming a user in
any way MENTIONS takes is a candidate, but where it holds an escape and is no JSON (a word's escaped
spellings in a text): with such a letter before the cut, or one that is a candidate for many users, each
user's own read finds the set's letters, as before. So the answer is what MENTIONS gives user by user
(tests/integration/test_letter.py compares them). Vectorscan (multiMatchAny), which would run every
user's patterns at once, took 50 s and 1.2 GiB to compile them for 100 ids of 250 characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from eventpipe.store.concealment import PUBLIC, concealed, hide, release
from eventpipe.store.deletion import CUT, LETTERS
from eventpipe.store.failure import classified
from eventpipe.store.mention import (
    FRACTION,
    MENTIONS,
    OWN,
    mentions,
    mentions_of,
    numbered,
    numbered_mentions,
    of_each,
    user_float,
)
from eventpipe.store.query import bound_bytes, parameter_chunks

# multiSearchAny and multiSearchAllPositions take 255 needles at most.
NEEDLES = 250
# A JSON string literal, escapes and all: read from the start of a letter that is JSON, each match is one of its
# strings, as every quote outside one opens the next.
LITERAL = r'"(?:[^"\\]|\\.)*"'
# Each letter's text; in one that is JSON and holds an escape, its strings once unescaped (MENTIONS finds an
# id in a whole string however escaped or, from an escaped quote on, in its end; elsewhere as it is, between
# two strings, where JSON escapes nothing); and the doubles it gives a "user_id" (4.242e3 holds no 4242).
READ = (
    "SELECT dead_letter_id, payload, toValidUTF8(payload) AS text, if(position(payload, '\\\\') > 0 AND"  # noqa: S608
    " isValidJSON(payload), arrayStringConcat(arrayMap(s -> JSONExtractString(s), extractAll(payload,"
    " {literal:String})), '\\n'), '') AS unescaped,"
    " arrayMap(x -> toFloat64OrNull(x), extractAll(payload, {fraction:String})) AS doubles"
    f" FROM dead_letters FINAL WHERE {CUT}"
)
# One user's letters, as one erasure after another read them.
BY_ONE = f"SELECT dead_letter_id FROM dead_letters FINAL WHERE {LETTERS}"  # noqa: S608 - constants
# Letters a set's read leaves to each user's own (BY_ONE): an escape in one that is no JSON (a word's escaped
# spellings, which no search for the id finds) leaves the whole set there; a letter that is a candidate for more
# than CROWD users of a group leaves that group. Tried on a letter with patterns read from an array, each user's
# are compiled again for each letter (25,000 letters and 1,000 users: 246 s), and each holds a copy of the
# letter (20 letters of 62 KB naming 150 users: 720 MB): CROWD copies at most.
TEXT_ESCAPES = (
    "SELECT count() FROM dead_letters WHERE position(payload, '\\\\') > 0 AND NOT isValidJSON(payload)"  # noqa: S608
    f" AND {CUT}"
)
CROWD = 8
# Up to what size of set each user's own read is cheaper than finding candidates first.
FEW = 8
# What each of a group's arrays holds at most, in bytes of ids and patterns: each candidate of a group carries
# the group's arrays (CROWD candidates at most in a block), so this bounds what a read holds per letter. The
# arrays travel as an insert's data into erasure_keys, not as parameters: no HTTP form field caps them.
GROUP_BYTES = 64 * 1024
# The names of a group's values, which `_grouped` names for their group: all but the public ones and the
# pattern every user shares (`fraction`, hidden once for the set).
_GROUP_VALUE = re.compile(r"\{(?!(?:" + "|".join(sorted(PUBLIC | {"fraction"})) + r"):)(\w+):")
# Rows a block: each candidate's array of places holds a number per user of the group, and each of its
# candidates a copy of it (CROWD of 64 KiB: 512 KiB a row).
SETTINGS = {"max_block_size": 128}


def _named(chunks: int) -> str:
    """The letters before the cut that may name a group's users, each with the places (from 1) of those it names
    (the group's values as arrays, of_each), or, where it may name more than CROWD of them, crowded (and no
    places): the group's ids given as `chunks` arrays of NEEDLES at most, and its users' doubles as `floats`."""
    needles = [f"{{needles_{k}:Array(String)}}" for k in range(chunks)]
    held = " OR ".join(f"multiSearchAny({t}, {n})" for n in needles for t in ("text", "unescaped"))
    at = [
        "arrayConcat(" + ", ".join(f"multiSearchAllPositions({t}, {n})" for n in needles) + ")"
        for t in ("text", "unescaped")
    ]
    places = (
        "arrayFilter((i, a, b) -> a + b > 0 OR (notEmpty(doubles) AND has(doubles, {floats:Array(Float64)}[i])),"
        f" range(1, {{group_size:UInt32}} + 1), {at[0]}, {at[1]})"
    )
    # Only where some id is held: most letters hold none, and the arrays are the group's size.
    candidates = f"SELECT *, if({held} OR notEmpty(doubles), {places}, []) AS places FROM ({READ})"  # noqa: S608
    crowded = f"length(places) > {CROWD}"
    named = f"if({crowded}, [], arrayFilter(i -> {of_each(MENTIONS)}, places))"
    return (
        f"SELECT dead_letter_id, named, crowded FROM (SELECT dead_letter_id, {named} AS named, {crowded} AS crowded"  # noqa: S608
        f" FROM ({candidates}) WHERE notEmpty(places)) WHERE notEmpty(named) OR crowded"
    )


def _size(mentioned: dict[str, object]) -> int:
    """What a user whose `mentions` are `mentioned` adds to the largest of a group's arrays (GROUP_BYTES at most)."""
    return max(bound_bytes(str(mentioned[name])) for name in OWN)


def named_letters(
    client: Client, user_ids: Sequence[str], cut_ms: int, token: str | None = None
) -> dict[str, set[str]]:
    """The ids of the dead letters received up to `cut_ms` that name each of `user_ids` (MENTIONS).

    Every value naming a user is read from erasure_keys (store.concealment), as a server logs each statement with
    its parameters written in: under the erasure's `token`, which holds `numbered_mentions(user_ids)` (repeats
    dropped), or, without one, under a token of its own, released once read."""
    users = list(dict.fromkeys(user_ids))
    if token is None:
        token = hide(client, cut_ms, numbered_mentions(users))
        try:
            return named_letters(client, users, cut_ms, token)
        finally:
            release(client, cut_ms, token)
    found: dict[str, set[str]] = {user_id: set() for user_id in users}
    # An empty id (no call gives one) names an empty letter, where multiSearch finds no empty needle.
    alone: list[str] = [user_id for user_id in users if not user_id]
    searched = [user_id for user_id in users if user_id]
    if len(searched) <= FEW or _count(client, TEXT_ESCAPES, {"cut": cut_ms}):
        alone, searched = list(users), []
    # Each user's patterns, built once: they size the groups and fill their arrays.
    of = {user_id: mentions(user_id) for user_id in searched}
    groups = list(parameter_chunks(searched, lambda user_id: _size(of[user_id]), GROUP_BYTES))
    values = [_values(group, k, of) for k, group in enumerate(groups)]
    if groups:
        hide(client, cut_ms, {name: value for of_one in values for name, value in of_one.items()}, token)
    for k, group in enumerate(groups):
        if not _by_group(client, group, k, values[k], cut_ms, token, found):
            alone += group
    place = {user_id: number for number, user_id in enumerate(users)}
    for user_id in alone:
        # Each user's own read finds every letter naming them.
        with classified():
            own = {**mentions(user_id, place[user_id]), "cut": cut_ms, "token": token}
            sql, bound = concealed(numbered(BY_ONE, place[user_id]), own)
            rows = client.query(sql, parameters=bound).result_rows
        found[user_id].update(str(row[0]) for row in rows)
    return found


def _values(group: list[str], k: int, of: dict[str, dict[str, object]]) -> dict[str, object]:
    """The values of group `k`'s read (`_named`) that name its users (their `mentions` in `of`), each named for the
    group (`_grouped`)."""
    chunks = [group[start : start + NEEDLES] for start in range(0, len(group), NEEDLES)]
    values = {
        **mentions_of([of[user_id] for user_id in group]),
        **{f"needles_{n}": chunk for n, chunk in enumerate(chunks)},
        "floats": [user_float(user_id) for user_id in group],
    }
    return {f"{name}_g{k}": value for name, value in values.items()}


def _grouped(sql: str, k: int) -> str:
    """`sql` reading group `k`'s values (`_values`): those of every group are hidden under one token."""
    return _GROUP_VALUE.sub(lambda found: "{" + found.group(1) + f"_g{k}:", sql)


def _by_group(
    client: Client,
    group: list[str],
    k: int,
    values: dict[str, object],
    cut_ms: int,
    token: str,
    found: dict[str, set[str]],
) -> bool:
    """Add to `found` the letters naming each of `group` (the `k`th, its `values` hidden under `token`) by their
    candidates; False where a letter is crowded."""
    chunks = (len(group) + NEEDLES - 1) // NEEDLES
    # `fraction`, every user's pattern, is hidden once for the set, as the erasure's deletes read it.
    given = {"cut": cut_ms, "token": token, "literal": LITERAL, "group_size": len(group), "fraction": FRACTION}
    with classified():
        sql, bound = concealed(_grouped(_named(chunks), k), {**given, **values})
        rows = client.query(sql, parameters=bound, settings=SETTINGS).result_rows
    for letter, places, _crowded in rows:
        for place in places:
            found[group[int(place) - 1]].add(str(letter))
    return not any(crowded for _letter, _places, crowded in rows)


def _count(client: Client, sql: str, parameters: dict[str, object]) -> int:
    with classified():
        return int(str(client.query(sql, parameters=parameters).result_rows[0][0]))
