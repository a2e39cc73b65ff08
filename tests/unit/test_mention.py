"""The pattern an erasure finds a user's id in a dead letter by: every escaping of the id, nothing else."""

from __future__ import annotations

import json
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe.store.mention import MENTIONS, json_string, mentions, numbered, spellings
from tests.support.escape import escaped


def as_python(pattern: str) -> re.Pattern[str]:
    """RE2's \\x{HH} as Python's \\xHH (the only RE2-only syntax the pattern uses)."""
    return re.compile(re.sub(r"\\x\{([0-9a-f]{2})\}", r"\\x\1", pattern))


ids = st.text(min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(user=ids, seed=st.integers(0, 2**32))
def test_every_escaping_of_the_id_is_found(user: str, seed: int) -> None:
    literal = escaped(user, random.Random(seed))
    assert json.loads(literal) == user
    assert as_python(json_string(user)).fullmatch(literal), literal


@settings(max_examples=300, deadline=None)
@given(user=ids, other=ids, seed=st.integers(0, 2**32))
def test_a_string_of_another_id_is_not_found(user: str, other: str, seed: int) -> None:
    if user != other:
        assert not as_python(json_string(user)).fullmatch(escaped(other, random.Random(seed)))


def test_the_forms_encoders_write() -> None:
    pattern = as_python(json_string("dXNlcjz1="))
    assert pattern.fullmatch('"dXNlcjz1\\u003d"')  # Gson's HTML-safe escape
    assert pattern.fullmatch('"dXNlcjz1\\u003D"')
    assert not pattern.fullmatch('"dXNlcjz1\\u003d\\u003d"')
    assert as_python(json_string("a/b")).fullmatch('"a\\/b"')


# As a Gson producer writes dXNlcg== (`=` as \u003d), in payloads ClickHouse's isValidJSON refuses: a number
# beyond a double, a raw tab in a string, one cut at the size limit (found by an attack).
GSON_ID, GSON = "dXNlcg==", "dXNlcg\\u003d\\u003d"
NOT_JSON = [
    '{"event_id":"g-a","user_id":"' + GSON + '","reading":1e400}',
    '{"event_id":"g-b","user_id":"' + GSON + '","note":"tab\there"}',
    '{"event_id":"g-d","user_id":"' + GSON + '","blob":"' + "x" * 100,
]


def test_text_that_is_no_json_is_searched_for_the_id_as_a_json_string_with_any_escape() -> None:
    # The word's spellings are the escapes Python writes: none is Gson's, so those letters outlived the
    # erasure. The JSON string's pattern goes over such text too, after toValidUTF8 as the word's does.
    assert not any(spelling in text for text in NOT_JSON for spelling in spellings(GSON_ID))
    assert "match(toValidUTF8(payload), {json_string:String})" in MENTIONS
    pattern = as_python(json_string(GSON_ID))
    assert all(pattern.search(text) for text in NOT_JSON)
    assert not any(as_python(json_string("dXNlcg=")).search(text) for text in NOT_JSON)


@settings(max_examples=100, deadline=None)
@given(user=ids, seed=st.integers(0, 2**32), tail=st.sampled_from([',"n":1e400}', ',"t":"\t"}', ',"blob":"xx']))
def test_every_escaping_of_the_id_is_found_in_json_that_isvalidjson_refuses(user: str, seed: int, tail: str) -> None:
    text = '{"user_id":' + escaped(user, random.Random(seed)) + tail
    assert as_python(json_string(user)).search(text), text


def test_each_user_of_a_set_reads_the_patterns_named_for_them_and_only_those() -> None:
    # One erasure of many users hides every user's patterns under one token, one name per value.
    read = set(re.findall(r"\{(\w+):", numbered(MENTIONS, 7)))
    # The double's pattern is every user's: one value for a set, not one a user.
    own = {f"{name}_7" for name in mentions("u") if name != "fraction"}
    assert read == set(mentions("u", 7)) == own | {"fraction"}
    assert mentions("u", 7)["fraction"] == mentions("42", 8)["fraction"]
    assert mentions("913297552", 7)["user_number_7"] == mentions("913297552")["user_number"]
