"""Opaque keyset cursors: where the last page ended, bound to the query that made it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from eventpipe.api.error import ApiError
from eventpipe.store.query import Position

VERSION = 1
MAX_CHARS = 1024


def scope(*filters: object) -> str:
    """A short fingerprint of a query's filters: a cursor only continues the query it came from."""
    return hashlib.sha256(json.dumps(filters, default=str).encode()).hexdigest()[:16]


def encode(position: Position, query_scope: str) -> str:
    raw = json.dumps([VERSION, position.time_ms, position.id, query_scope], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(text: str, query_scope: str) -> Position:
    """The position in `text`, or a 422 saying why the cursor is unusable."""
    if len(text) > MAX_CHARS:
        raise _invalid("it is too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        version, time_ms, last_id, made_for = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise _invalid("it is not one this API issued") from None
    valid = (
        version == VERSION
        and type(time_ms) is int
        and 0 <= time_ms < 10**13
        and isinstance(last_id, str)
        and isinstance(made_for, str)
    )
    if not valid:
        raise _invalid("it is not one this API issued")
    if made_for != query_scope:
        raise ApiError(
            422, "invalid_parameter", "cursor: it belongs to a query with other filters; keep the first page's filters"
        )
    return Position(time_ms, last_id)


def _invalid(why: str) -> ApiError:
    return ApiError(422, "invalid_parameter", f"cursor: {why}; pass next_cursor from the previous page unchanged")
