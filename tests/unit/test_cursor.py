"""Keyset cursors: they round-trip, and anything not issued for this query is refused with a reason."""

from __future__ import annotations

import base64
import json

import pytest

from eventpipe.api import cursor
from eventpipe.api.error import ApiError
from eventpipe.store.query import Position

SCOPE = cursor.scope("events", "click", None, 1, None)


def forged(*fields: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(fields)).encode()).decode().rstrip("=")


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    position = Position(1_772_323_200_123, "id with spaces/and+plus=and-é")
    text = cursor.encode(position, SCOPE)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert cursor.decode(text, SCOPE) == position


def test_filters_change_the_scope() -> None:
    assert cursor.scope("events", "click", None, 1, None) != cursor.scope("events", "click", None, 2, None)
    assert cursor.scope("events", None, "u1") != cursor.scope("dead_letters", None, "u1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage!",
        "A" * 2000,
        forged(1, 10),
        forged(2, 10, "id", SCOPE),  # another version
        forged(1, "10", "id", SCOPE),
        forged(1, True, "id", SCOPE),
        forged(1, -1, "id", SCOPE),
        forged(1, 10**13, "id", SCOPE),
        forged(1, 10, 5, SCOPE),
        forged(1, 10, "id", None),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
    ],
)
def test_anything_else_is_refused_with_a_422(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        cursor.decode(text, SCOPE)
    assert refused.value.status == 422 and refused.value.detail.startswith("cursor: ")


def test_a_cursor_of_another_query_is_refused() -> None:
    text = cursor.encode(Position(10, "id"), SCOPE)
    with pytest.raises(ApiError, match="other filters"):
        cursor.decode(text, cursor.scope("events", "login", None, 1, None))
