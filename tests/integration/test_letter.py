"""The dead letters naming each user of a set, found in one read (store/letter.py): exactly those each user's
own patterns (store.mention.MENTIONS) find, read one user after another."""

from __future__ import annotations

import json
import random

import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.errors import StorageError
from eventpipe.events import Limits, Rejection, parse
from eventpipe.store import letter
from eventpipe.store.deletion import LETTERS
from eventpipe.store.letter import GROUP_BYTES, NEEDLES, named_letters
from eventpipe.store.mention import mentions
from eventpipe.store.writer import Writer
from tests.support.escape import escaped

MARCH_MS = 1_772_323_200_000
AFTER_ALL = MARCH_MS + 10**9
# Ids that hold each other, escape in JSON, are numbers, or take more than one UTF-16 unit.
USERS = [
    "alice",
    "alice.smith",
    "42",
    "0",
    "4242",
    "-7",
    "a/b",
    'q"uote',
    "back\\slash",
    "u=1",
    "\u00e9-user",
    "\U0001f600x",
    "user-1",
    "user-10",
    # What stands between two strings of a JSON object: MENTIONS takes it there, as `"…"`.
    ": 1, ",
]


def payloads(users: list[str], rng: random.Random) -> list[bytes]:
    """Letters naming `users` in every way MENTIONS takes, and some that only look as if they did."""
    found: list[bytes] = []
    for user in users:
        found += [
            json.dumps({"user_id": user, "timestamp": "x"}).encode(),
            json.dumps({"user_id": user, "timestamp": "x"}, ensure_ascii=False).encode(),
            ('{"data": {"user_id": ' + escaped(user, rng) + '}, "timestamp": 1.5}').encode(),
            # The id escaped at the end of a longer string, after an escaped quote: MENTIONS takes it there too.
            ('{"note": "says \\"' + escaped(user, rng)[1:] + ', "timestamp": 1.5}').encode(),
            f"text user={user} at /p/1".encode(),
            f"prefix{user}suffix no word".encode(),
            b"\xff" + user.encode() + b"\xfe cut",
            json.dumps({"user_id": f"{user}-other", "timestamp": "x"}).encode(),
            ('{"note": "' + json.dumps(user)[1:-1] + '", "timestamp": [], "cut":').encode(),
        ]
        if user.lstrip("-").isdigit():
            number = int(user)
            found += [
                f'{{"user_id": {number}, "timestamp": "x"}}'.encode(),
                f'{{"user\\u005fid": {number}.0, "timestamp": "x"}}'.encode(),
                f'{{"user_id": {number / 1000}e3, "timestamp": "x"}}'.encode(),
                f'{{"amount": {number}, "timestamp": "x"}}'.encode(),
            ]
    return found


def stored(client: Client, bodies: list[bytes]) -> None:
    letters = []
    for i, body in enumerate(bodies):
        letter = parse("events/bad", body, MARCH_MS + i, Limits())
        assert isinstance(letter, Rejection), body
        letters.append(letter)
    Writer(client).insert_dead_letters(letters)


def one_by_one(client: Client, users: list[str]) -> dict[str, set[str]]:
    """What each user's own patterns take, read one user after another, as erasures did before."""
    sql = f"SELECT dead_letter_id FROM dead_letters FINAL WHERE {LETTERS}"  # noqa: S608 - constants
    return {
        user: {str(row[0]) for row in client.query(sql, parameters={**mentions(user), "cut": AFTER_ALL}).result_rows}
        for user in users
    }


def in_json_or_plain(body: bytes) -> bool:
    """Whether a set's read tries `body` itself: JSON, or no escape in it (BY_USER)."""
    try:
        json.loads(body)
    except ValueError:
        return b"\\" not in body
    return True


def test_a_set_finds_exactly_the_letters_each_users_own_patterns_find(client: Client) -> None:
    rng = random.Random(7)
    stored(client, [body for body in payloads(USERS, rng) if in_json_or_plain(body)])
    # Escapes only in some letters: the rest are read by the ids they hold.
    stored(client, [json.dumps({"user_id": f"other-{i}", "n": i, "timestamp": "x"}).encode() for i in range(200)])
    stored(client, [b'{"a": 1, "timestamp": "x\\u0021"}'])

    expected = one_by_one(client, USERS)
    assert all(expected.values()), "every user is named by some letter"
    assert named_letters(client, USERS, AFTER_ALL) == expected
    # The set's order does not change what each is found in.
    assert named_letters(client, USERS[::-1], AFTER_ALL) == expected
    # The values it hid to read them by (store.concealment) are gone once read: they name every user of the set.
    assert client.query("SELECT count() FROM erasure_keys").result_rows == [(0,)]


def test_a_set_read_that_fails_leaves_none_of_its_values_hidden(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored(client, [json.dumps({"user_id": user, "timestamp": "x"}).encode() for user in USERS])
    # A limit the group's read runs into fails it.
    monkeypatch.setattr(letter, "SETTINGS", {**letter.SETTINGS, "max_result_rows": 1, "result_overflow_mode": "throw"})
    with pytest.raises(StorageError):
        named_letters(client, USERS, AFTER_ALL)
    assert client.query("SELECT count() FROM erasure_keys").result_rows == [(0,)]


def test_escapes_in_a_letter_that_is_no_json_send_the_set_to_each_users_own_read(client: Client) -> None:
    stored(client, payloads(USERS, random.Random(5)))
    assert any(not in_json_or_plain(body) for body in payloads(USERS, random.Random(5)))
    assert named_letters(client, USERS, AFTER_ALL) == one_by_one(client, USERS)


def test_letters_received_after_the_cut_are_not_found(client: Client) -> None:
    stored(client, [b'{"user_id": "alice", "timestamp": "x"}'])
    assert named_letters(client, ["alice"], MARCH_MS - 1) == {"alice": set()}
    assert len(named_letters(client, ["alice"], MARCH_MS)["alice"]) == 1


def test_ids_most_letters_hold_are_found_as_each_users_own_patterns_find_them(client: Client) -> None:
    # Single characters and digits: nearly every letter holds them, so each user's own read is cheaper.
    users = [*"abcdefghijklmnopqrstuvwxyz", *"0123456789", "-"]
    stored(client, payloads(users, random.Random(3)))
    assert named_letters(client, users, AFTER_ALL) == one_by_one(client, users)


def test_more_users_than_one_search_takes_and_longer_ids_than_one_statement_holds(client: Client) -> None:
    rng = random.Random(11)
    many = [f"user-{i:04d}" for i in range(NEEDLES + 60)]
    # Ids of 250 characters: a group's arrays (GROUP_BYTES each) hold a few users'.
    long = [f"{i:03d}-" + "".join(rng.choice("ab/=\u00e9") for _ in range(246)) for i in range(40)]
    assert sum(len(str(v)) for user in long for v in mentions(user).values()) > 4 * GROUP_BYTES
    named = [*many[::37], *long[::7]]
    stored(client, [json.dumps({"user_id": user, "timestamp": "x"}).encode() for user in named])
    stored(client, [("{" + f'"user_id": {escaped(user, rng)}' + ', "timestamp": "x"}').encode() for user in long[::5]])

    found = named_letters(client, [*many, *long], AFTER_ALL)
    assert found == one_by_one(client, [*many, *long])
    assert {user for user, letters in found.items() if letters} == set(named) | set(long[::5])


def test_an_empty_id_is_found_in_an_empty_letter_as_its_own_patterns_find_it(client: Client) -> None:
    # MENTIONS' word takes an empty id in an empty letter (`^$`), and multiSearch finds no empty needle in an
    # empty haystack. The API takes no empty id; named_letters answers for it all the same (found by an attack).
    stored(client, [b"", b"a."])
    users = ["", *(f"user-{i}" for i in range(20))]
    expected = one_by_one(client, users)
    assert len(expected[""]) == 2
    assert named_letters(client, users, AFTER_ALL) == expected
