"""Keyset cursors: they round-trip, are signed, and anything not issued for this query is refused
with a 422 and a reason, whatever bytes or JSON a client puts in one."""

from __future__ import annotations

import base64
import json
import string
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpipe.api import cursor
from eventpipe.api.bookmark import Bookmarks
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import ApiError
from eventpipe.store.feed import Place
from eventpipe.store.page import Position
from eventpipe.store.query import Key

CURSOR_KEY = "unit-test-cursor-secret-0123456789abcdef"
SCOPE = cursor.scope("events", "click", None, 1, None)
CURSORS = Cursors(CURSOR_KEY)
# The documented layout behind the tag: version, scope, time (big-endian), then the id as UTF-8.
HEADER = struct.Struct(">B8sQ")
# Any character, lone surrogates included (hypothesis leaves them out unless asked).
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=140)


def body(version: int = cursor.VERSION, scope: str = SCOPE, time_ms: int = 10, last_id: bytes = b"id") -> bytes:
    return HEADER.pack(version, bytes.fromhex(scope), time_ms) + last_id


def unsigned(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def refusal(text: str, cursors: Cursors = CURSORS) -> str:
    with pytest.raises(ApiError) as refused:
        cursors.decode(text, SCOPE)
    assert refused.value.status == 422 and refused.value.error == "invalid_parameter"
    assert refused.value.detail.startswith("cursor: ")
    return refused.value.detail


@pytest.mark.parametrize(
    "last_id",
    [
        "id with spaces/and+plus=and-é",
        "💩" * 128,  # the longest id, 4 bytes a character: as JSON escapes its cursor was too long
        "\x01" * 128,
        "\x00",
    ],
)
@pytest.mark.parametrize("tie", [None, "click", "💩" * 128])  # an event's type: the longest too
def test_a_cursor_round_trips_is_url_safe_and_fits_the_parameter(last_id: str, tie: str | None) -> None:
    position = Position(1_772_323_200_123, last_id, tie)
    text = CURSORS.encode(position, SCOPE)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(text) <= cursor.MAX_CHARS
    assert CURSORS.decode(text, SCOPE) == position


def test_replicas_with_one_secret_read_each_others_cursors_and_others_do_not() -> None:
    text = CURSORS.encode(Position(10, "id"), SCOPE)
    assert Cursors(CURSOR_KEY).decode(text, SCOPE) == Position(10, "id")
    assert "start again from the first page" in refusal(text, Cursors(CURSOR_KEY + "x"))
    # Without a secret each instance has its own key, as a restarted process does.
    assert "start again from the first page" in refusal(Cursors().encode(Position(10, "id"), SCOPE), Cursors())


def test_filters_change_the_scope() -> None:
    assert cursor.scope("events", "click", None, 1, None) != cursor.scope("events", "click", None, 2, None)
    assert cursor.scope("events", None, "u1") != cursor.scope("dead_letters", None, "u1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage!",
        "A" * 2000,
        "AAAAA",  # no base64 has this length
        "AAAA====",
        "%00%01",
        "é",
        "\ud800",
        unsigned([1, 10]),
        unsigned([1, 10, "id", SCOPE]),  # the old format: valid-looking, unsigned
        unsigned([1, 10, "\ud800", SCOPE]),  # the id that answered 500
        unsigned([2, 10, "id", SCOPE]),
        unsigned({"a": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(body()).decode(),  # a valid body without its tag
        base64.urlsafe_b64encode(bytes(16) + body()).decode(),  # with a zero tag
    ],
)
def test_anything_unsigned_is_refused_with_a_422(text: str) -> None:
    refusal(text)


@pytest.mark.parametrize(
    "signed",
    [
        b"",
        body()[:-3],  # shorter than the header
        body(version=1),
        body(version=255),
        body(time_ms=10**13),
        body(time_ms=2**64 - 1),
        body(last_id=b""),
        body(last_id="\ud800".encode("utf-8", "surrogatepass")),  # a lone surrogate
        body(last_id=b"\xed\xb0\x80\xed\xa0\x80"),  # a reversed surrogate pair
        body(last_id=b"\xc0\xaf"),  # an overlong '/'
        body(last_id=b"\xff"),
        body(last_id=b"x" * 129),
        json.dumps([2, 10, "id", SCOPE]).encode(),
    ],
)
def test_fields_are_checked_even_behind_a_valid_signature(signed: bytes) -> None:
    # Only the key's holder can make these; a leaked key must still not reach a query with them.
    assert "pass next_cursor from the previous page unchanged" in refusal(CURSORS.seal(signed))


def test_every_flipped_bit_of_a_signed_cursor_is_refused() -> None:
    raw = bytearray(base64.urlsafe_b64decode(CURSORS.encode(Position(1_772_323_200_123, "ev-1"), SCOPE) + "=="))
    for bit in range(len(raw) * 8):
        flipped = raw.copy()
        flipped[bit // 8] ^= 1 << (bit % 8)
        refusal(base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("="))


def test_only_the_issued_spelling_of_a_cursor_is_taken() -> None:
    # The last character's unused bits decode to nothing: 15 other last characters were taken as the
    # cursor itself (an attack). Only the one issued is.
    alphabet = string.ascii_letters + string.digits + "-_"
    issued = [CURSORS.encode(Position(1_772_323_200_123, "e" * n), SCOPE) for n in (1, 2, 3)]
    assert {len(text) % 4 for text in issued} == {2, 3, 0}, "every length a cursor can end with"
    for text in issued:
        for last in alphabet:
            variant = text[:-1] + last
            if variant != text:
                refusal(variant)
        assert CURSORS.decode(text, SCOPE).time_ms == 1_772_323_200_123


def test_a_cursor_of_another_query_is_refused() -> None:
    text = CURSORS.encode(Position(10, "id"), SCOPE)
    with pytest.raises(ApiError, match="other filters"):
        CURSORS.decode(text, cursor.scope("events", "login", None, 1, None))


@given(ANY_TEXT | st.text(max_size=1100))
@settings(max_examples=300, deadline=None)
def test_no_text_gets_anything_but_a_422(text: str) -> None:
    refusal(text)


@given(
    version=st.integers(0, 255),
    time_ms=st.integers(0, 2**64 - 1),
    last_id=st.one_of(
        st.binary(max_size=600), st.text(max_size=140).map(lambda text: text.encode("utf-8", "surrogatepass"))
    ),
)
@settings(max_examples=300, deadline=None)
def test_a_signed_body_is_a_valid_position_or_a_422(version: int, time_ms: int, last_id: bytes) -> None:
    text = CURSORS.seal(body(version, SCOPE, time_ms, last_id))
    try:
        position = CURSORS.decode(text, SCOPE)
    except ApiError as refused:
        assert refused.status == 422
        return
    assert version in (cursor.VERSION, cursor.TIED) and 0 <= position.time_ms < 10**13
    assert 0 < len(position.id) <= 128
    if version == cursor.VERSION:
        assert position.tie is None and position.id.encode() == last_id
    else:
        assert position.tie is not None and 0 < len(position.tie) <= 128
        assert last_id == len(position.id.encode()).to_bytes(2, "big") + position.id.encode() + position.tie.encode()


def test_a_feed_token_carries_the_store_generation_and_one_issued_before_it_was_kept_still_reads() -> None:
    bookmarks = Bookmarks(CURSORS)
    place = Place(lo=7, hi=9, served_before_ms=5, epoch_before_ms=6, after=Key(10, "click", "e1"), generation=3)
    assert bookmarks.decode(bookmarks.encode(place, SCOPE), SCOPE) == place
    # A version 0x46 token (no generation), issued before the upgrade: the sync goes on, as generation 0.
    old = struct.pack(">B8sQQQQB", 0x46, bytes.fromhex(SCOPE), 7, 0, 5, 0, 0)
    assert bookmarks.decode(CURSORS.seal(old), SCOPE) == Place(lo=7, served_before_ms=5, generation=0)


def test_a_feed_token_at_a_windows_end_round_trips_and_half_an_empty_key_is_refused() -> None:
    # A page out of time between two windows (store.feed) holds the window's end with an empty type and id,
    # which no event has; a token with only one of the two empty was never issued.
    bookmarks = Bookmarks(CURSORS)
    place = Place(lo=7, hi=9, served_before_ms=5, epoch_before_ms=6, after=Key.resume(10), generation=3)
    assert bookmarks.decode(bookmarks.encode(place, SCOPE), SCOPE) == place
    for half in (Key(10, "", "e1"), Key(10, "click", "")):
        with pytest.raises(ApiError):
            bookmarks.decode(bookmarks.encode(place._replace(after=half), SCOPE), SCOPE)
