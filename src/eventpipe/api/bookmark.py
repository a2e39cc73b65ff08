"""The feed's `next` tokens: where a client is in the arrival feed, bound to its filters, signed.

A token is a cursor's sealing (api.cursor: base64url of a 16-byte HMAC tag and
what it signs, with the same key) around: a version byte, the filters' 8-byte
scope, the epoch's lo and hi block numbers (hi 0 between epochs), its two
complete_until instants in milliseconds, the store's generation (its newest
restore's id; not in tokens of version 0x46, read as 0), and, inside an epoch, the last key
served: time, event type (length-prefixed) and id as UTF-8; or, where a page ran out of time
between two windows, that time with an empty type and id (store.query.Key.resume). A client holds its
whole place, so any API process with the same key (EVENTPIPE_CURSOR_SECRET)
continues it, and a forged or damaged token is refused before it reaches SQL.
"""

from __future__ import annotations

import struct

from eventpipe.api.cursor import LATEST_MS, SCOPE_BYTES, Cursors
from eventpipe.api.error import ApiError
from eventpipe.events.contract import MAX_ID_CHARS, MAX_TYPE_CHARS
from eventpipe.store.feed import Place
from eventpipe.store.query import Key

# Not a cursor's version (2): a cursor passed as a token, or the reverse, is refused.
# 0x46 tokens, issued before the generation was kept, are still read: a sync goes on across the upgrade.
VERSION, BEFORE_GENERATION = 0x47, 0x46
MAX_CHARS = 2048
_HEADER = struct.Struct(f">B{SCOPE_BYTES}sQQQQQB")
# Where the generation sits in _HEADER: before it, a 0x46 token's header is the same.
_GENERATION_AT = _HEADER.size - 9
_KEY = struct.Struct(">QH")
# Block numbers are UInt64 in ClickHouse; the driver binds what fits a signed 64-bit integer.
MAX_BLOCK = 2**63 - 1


class Bookmarks:
    """Issues and reads feed tokens with the key of `cursors`."""

    def __init__(self, cursors: Cursors) -> None:
        self._cursors = cursors

    def encode(self, place: Place, query_scope: str) -> str:
        after = place.after
        head = _HEADER.pack(
            VERSION,
            bytes.fromhex(query_scope),
            place.lo,
            place.hi or 0,
            place.served_before_ms,
            place.epoch_before_ms,
            place.generation,
            after is not None,
        )
        if after is None:
            return self._cursors.seal(head)
        kind = after.event_type.encode()
        return self._cursors.seal(head + _KEY.pack(after.time_ms, len(kind)) + kind + after.event_id.encode())

    def decode(self, text: str, query_scope: str) -> Place:
        """The place in `text`, or a 422 saying why the token is unusable."""
        body = self._cursors.unseal(text, "after", MAX_CHARS)
        if body[:1] == bytes([BEFORE_GENERATION]):  # read as today's token of generation 0
            body = bytes([VERSION]) + body[1:_GENERATION_AT] + bytes(8) + body[_GENERATION_AT:]
        if len(body) < _HEADER.size:
            raise _invalid()
        version, made_for, lo, hi, served_ms, epoch_ms, generation, has_key = _HEADER.unpack_from(body)
        if version != VERSION or has_key not in (0, 1) or lo > MAX_BLOCK or hi > MAX_BLOCK or generation > MAX_BLOCK:
            raise _invalid()
        if not (0 <= served_ms < LATEST_MS and 0 <= epoch_ms < LATEST_MS) or (hi and hi < lo):
            raise _invalid()
        if made_for != bytes.fromhex(query_scope):
            raise ApiError(
                422,
                "invalid_parameter",
                "after: it belongs to a feed with other filters; keep the first page's filters",
            )
        rest = body[_HEADER.size :]
        if not has_key:
            if rest or hi:
                raise _invalid()  # inside an epoch a token always holds the last key served
            return Place(lo=lo, served_before_ms=served_ms, generation=generation)
        if not hi or len(rest) < _KEY.size:
            raise _invalid()
        time_ms, type_bytes = _KEY.unpack_from(rest)
        try:
            # Strict UTF-8: no lone surrogates (ClickHouse's driver cannot send them), no overlong forms.
            kind = rest[_KEY.size : _KEY.size + type_bytes].decode()
            event_id = rest[_KEY.size + type_bytes :].decode()
        except UnicodeDecodeError:
            raise _invalid() from None
        if len(rest) < _KEY.size + type_bytes or not 0 <= time_ms < LATEST_MS:
            raise _invalid()
        key = Key(time_ms, kind, event_id)
        # Or no event's key, where a page ran out of time between two windows (Key.resume).
        if not (key.resumes or (0 < len(kind) <= MAX_TYPE_CHARS and 0 < len(event_id) <= MAX_ID_CHARS)):
            raise _invalid()
        return Place(lo, hi, served_ms, epoch_ms, key, generation)


def _invalid() -> ApiError:
    return ApiError(422, "invalid_parameter", "after: it is not one this API issued; pass next unchanged")
