"""The keys file's format: what it grants, and every mistake refused with where and why, never with the value."""

from __future__ import annotations

import hashlib
import json

import pytest

from eventpipe.api.grant import Grant
from eventpipe.api.keyfile import KeyFileError, parse

SECRET = "partner-a-secret-0123456789"  # noqa: S105 - a test key
HASH = hashlib.sha256(SECRET.encode()).hexdigest()
OTHER = hashlib.sha256(b"another").hexdigest()


def raw(*keys: dict[str, object]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def test_every_right_as_written_and_absent_means_all_types_no_limit_not_admin() -> None:
    entries = parse(
        raw(
            {
                "name": "partner-a",
                "sha256": HASH.upper(),
                "event_types": ["purchase", "click", "purchase"],
                "requests_per_minute": 120,
                "admin": False,
            },
            {"name": "ops.team_1", "sha256": OTHER, "admin": True},
        )
    )
    assert [entry.digest for entry in entries] == [bytes.fromhex(HASH), bytes.fromhex(OTHER)]
    assert [entry.grant for entry in entries] == [
        Grant("partner-a", ("click", "purchase"), 120, False),
        Grant("ops.team_1", None, None, True),
    ]
    assert parse(b'{"keys": []}') == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "Invalid JSON"),
        (b'{"keys": ' + b"[" * 3000 + b"]" * 3000 + b"}", "Invalid JSON: recursion limit exceeded"),
        (b"[]", "the file: Input should be an object"),
        (b"{}", "keys: Field required"),
        (b'{"keys": [], "admins": []}', "admins: unknown field (the fields are keys)"),
        # A misspelt right read as absent would widen what the key sees.
        (raw({"name": "a", "sha256": HASH, "event_type": ["purchase"]}), "keys[0].event_type: unknown field"),
        (raw({"name": "a", "sha256": HASH, "event_types": []}), "keys[0].event_types: name one type at least"),
        # A null read as absent gave every type and no limit, while the file looked limited (an attack).
        (raw({"name": "a", "sha256": HASH, "event_types": None}), "keys[0].event_types: null is not allowed"),
        (raw({"name": "a", "sha256": HASH, "requests_per_minute": None}), "keys[0].requests_per_minute: null is"),
        (raw({"name": "a", "sha256": HASH, "event_types": "purchase"}), "keys[0].event_types: Input should be"),
        (raw({"name": "a", "sha256": HASH, "event_types": [""]}), "keys[0].event_types: each type is 1 to 128"),
        (raw({"name": "a", "sha256": HASH, "event_types": ["t" * 129]}), "keys[0].event_types: each type is 1 to 128"),
        (raw({"name": "a", "sha256": HASH, "requests_per_minute": 0}), "keys[0].requests_per_minute: Input should"),
        (raw({"name": "a", "sha256": HASH, "requests_per_minute": "120"}), "keys[0].requests_per_minute: Input"),
        (raw({"name": "a", "sha256": HASH, "requests_per_minute": 10**6}), "less than or equal to 100000"),
        (raw({"name": "a", "sha256": HASH, "admin": "yes"}), "keys[0].admin: Input should be a valid boolean"),
        # Its erasures, replays and backups took every type, past the limit its reads kept.
        (
            raw({"name": "a", "sha256": HASH, "admin": True, "event_types": ["x"]}),
            "keys[0]: an admin key acts on every",
        ),
        (raw({"name": "a b", "sha256": HASH}), "keys[0].name: 1 to 64 of A-Z a-z 0-9"),
        (raw({"name": "env#1", "sha256": HASH}), "keys[0].name: 1 to 64"),
        (raw({"sha256": HASH}), "keys[0].name: Field required"),
        (raw({"name": "a", "sha256": HASH}, {"name": "a", "sha256": OTHER}), "two keys are named 'a'"),
        (raw({"name": "a", "sha256": HASH}, {"name": "b", "sha256": HASH.upper()}), "'a' and 'b' have the same"),
    ],
)
def test_a_mistake_is_refused_with_where_and_why(content: bytes, problem: str) -> None:
    with pytest.raises(KeyFileError) as refused:
        parse(content)
    assert problem in str(refused.value)


def test_a_key_pasted_where_its_hash_goes_is_refused_without_being_echoed() -> None:
    with pytest.raises(KeyFileError) as refused:
        parse(raw({"name": "a", "sha256": SECRET}))
    assert "keys[0].sha256: 64 hex digits, the SHA-256 of the key" in str(refused.value)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    "content",
    [
        b'{"keys": [], "' + SECRET.encode() + b'": "partner-a"}',
        raw({"name": "a", "sha256": HASH, SECRET: 1}),
        b'{"keys": [{"name": "a", "sha256": "'
        + HASH.encode()
        + b'", "'
        + (SECRET * 2).encode()
        + b'": 1, "'
        + (SECRET * 2).encode()
        + b'": 2}]}',
    ],
)
def test_a_key_pasted_as_a_field_name_is_refused_without_being_echoed(content: bytes) -> None:
    # The error goes to the API's log and to the start's error: the name of an unknown field was in it.
    with pytest.raises(KeyFileError) as refused:
        parse(content)
    assert "name is not shown" in str(refused.value) or "name not shown" in str(refused.value)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"keys": [{"name": "a", "sha256": "' + HASH.encode() + b'", "admin": false, "admin": true}]}', "admin"),
        (
            b'{"keys": [{"name": "a", "sha256": "' + HASH.encode() + b'", "event_types": ["x"], "event_types": null}]}',
            "event_types",
        ),
        (b'{"keys": [], "keys": []}', "keys"),
    ],
)
def test_a_field_given_twice_is_refused_not_read_as_its_last_value(content: bytes, field: str) -> None:
    # A parser keeps the last: an admin made of a key that reads as none, a limited key widened to every type.
    with pytest.raises(KeyFileError, match=f"the field {field} is given twice in one object"):
        parse(content)


def test_many_mistakes_are_summed_up() -> None:
    content = raw(*({"name": f"k{i}", "sha256": "x"} for i in range(10)))
    with pytest.raises(KeyFileError, match=r"and 7 more$"):
        parse(content)
