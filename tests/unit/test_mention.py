"""The pattern an erasure finds a user's id in a dead letter's JSON by: every escaping of the id, nothing else."""

from __future__ import annotations

import json
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe.store.mention import json_string


def as_python(pattern: str) -> re.Pattern[str]:
    """RE2's \\x{HH} as Python's \\xHH (the only RE2-only syntax the pattern uses)."""
    return re.compile(re.sub(r"\\x\{([0-9a-f]{2})\}", r"\\x\1", pattern))


def escaped(text: str, rng: random.Random) -> str:
    """`text` as a JSON string literal, each character as itself (where JSON allows) or escaped, at random."""
    out = []
    for ch in text:
        units = ch.encode("utf-16-be")
        spelled = "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
        options = [json.dumps(ch)[1:-1], spelled, spelled.upper().replace("\\U", "\\u")]
        if ch not in '"\\' and ord(ch) >= 0x20:
            options.append(ch)
        out.append(rng.choice(options))
    return '"' + "".join(out) + '"'


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
