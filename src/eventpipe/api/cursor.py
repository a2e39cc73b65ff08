"""Opaque keyset cursors: where the last page ended, bound to the query that made it, signed.

A cursor is base64url (no padding) of a 16-byte HMAC-SHA256 tag followed by
what it signs: a version byte, the query's 8-byte scope, the position's time
as 8 big-endian bytes and its id as UTF-8 (version 2); an event's position
also has its type (version 3: the id's length as 2 big-endian bytes, the id,
then the type). Binary rather than JSON so that no
id escapes into a cursor longer than the API accepts (128 emoji are 512 bytes
of UTF-8 but 1,536 of JSON escapes), and so that there is no parser to attack.

The tag is checked before anything is read, and every field is checked after
it anyway: a cursor is a client's input, and a leaked key must not turn a
forged id into a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import struct

from eventpipe.api.error import ApiError
from eventpipe.events.contract import MAX_ID_CHARS, MAX_TYPE_CHARS
from eventpipe.store.page import Position

# 2: a position without a tie (dead letters, erasures, and events' cursors
# issued before 3, still read); 3: with one (events).
VERSION, TIED = 2, 3
# The longest position (an id and a type of 128 four-byte characters each) with its tag and header
# is 1,059 bytes, 1,412 characters of base64.
MAX_CHARS = 2048
# Half of SHA-256 (RFC 2104 allows truncation to half): 2^128 guesses to forge one.
TAG_BYTES = 16
SCOPE_BYTES = 8
_HEADER = struct.Struct(f">B{SCOPE_BYTES}sQ")
_ID_LENGTH = struct.Struct(">H")
# The same bound as the API's time parameters: DateTime64(3) ends in 2299.
LATEST_MS = 10**13
_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
# A key signs only cursors: domain separation from any other use of the secret.
_CONTEXT = b"eventpipe cursor key\x00"


def scope(*filters: object) -> str:
    """A short fingerprint of a query's filters: a cursor only continues the query it came from."""
    return hashlib.sha256(json.dumps(filters, default=str).encode()).hexdigest()[: SCOPE_BYTES * 2]


class Cursors:
    """Issues and reads the cursors of one deployment: those signed with its secret.

    Without a secret the key is random per instance, so cursors do not survive
    a restart and one replica refuses another's (see EVENTPIPE_CURSOR_SECRET).
    """

    scope = staticmethod(scope)  # routes reach everything about cursors through the instance they are given

    def __init__(self, secret: str = "") -> None:
        """`secret`: EVENTPIPE_CURSOR_SECRET, whose length Settings checks (a short one can be guessed
        offline from one cursor)."""
        material = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hashlib.sha256(_CONTEXT + material).digest()

    def encode(self, position: Position, query_scope: str) -> str:
        made_for, last_id = bytes.fromhex(query_scope), position.id.encode()
        if position.tie is None:
            return self.seal(_HEADER.pack(VERSION, made_for, position.time_ms) + last_id)
        tied = _ID_LENGTH.pack(len(last_id)) + last_id + position.tie.encode()
        return self.seal(_HEADER.pack(TIED, made_for, position.time_ms) + tied)

    def seal(self, body: bytes) -> str:
        """`body` signed, as cursor text. Public for tests, which sign bodies the API would never issue."""
        return base64.urlsafe_b64encode(self._tag(body) + body).decode().rstrip("=")

    def decode(self, text: str, query_scope: str) -> Position:
        """The position in `text`, or a 422 saying why the cursor is unusable."""
        body = self.unseal(text)
        if len(body) < _HEADER.size:
            raise _invalid("it is not one this API issued")
        version, made_for, time_ms = _HEADER.unpack_from(body)
        rest, tie = body[_HEADER.size :], None
        if version == TIED:
            if len(rest) < _ID_LENGTH.size:
                raise _invalid("it is not one this API issued")
            (length,) = _ID_LENGTH.unpack_from(rest)
            rest, tied = rest[_ID_LENGTH.size : _ID_LENGTH.size + length], rest[_ID_LENGTH.size + length :]
            try:
                tie = tied.decode()
            except UnicodeDecodeError:
                raise _invalid("it is not one this API issued") from None
            if len(rest) != length or not 0 < len(tie) <= MAX_TYPE_CHARS:
                raise _invalid("it is not one this API issued")
        try:
            # Strict UTF-8: no lone surrogates (ClickHouse's driver cannot send them), no overlong forms.
            last_id = rest.decode()
        except UnicodeDecodeError:
            raise _invalid("it is not one this API issued") from None
        if version not in (VERSION, TIED) or not 0 <= time_ms < LATEST_MS or not 0 < len(last_id) <= MAX_ID_CHARS:
            raise _invalid("it is not one this API issued")
        if made_for != bytes.fromhex(query_scope):
            raise ApiError(
                422,
                "invalid_parameter",
                "cursor: it belongs to a query with other filters; keep the first page's filters",
            )
        return Position(time_ms, last_id, tie)

    def unseal(self, text: str, name: str = "cursor", max_chars: int = MAX_CHARS) -> bytes:
        """What `text` signs, once its tag checks out; else a 422 naming parameter `name`.
        Public for the feed's tokens (api.feed), signed with the same key."""
        if len(text) > max_chars:
            raise _invalid("it is too long", name)
        # Checked first: the decoder would otherwise skip characters outside the alphabet.
        if not _ALPHABET.fullmatch(text):
            raise _invalid("it is not one this API issued", name)
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise _invalid("it is not one this API issued", name) from None
        # The last character's unused bits decode to nothing: 15 variants of one cursor were taken as it.
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != text:
            raise _invalid("it is not one this API issued", name)
        tag, body = raw[:TAG_BYTES], raw[TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise ApiError(
                422,
                "invalid_parameter",
                f"{name}: it is not one this API issued, or the API's cursor key changed since; "
                "start again from the first page",
            )
        return body

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:TAG_BYTES]


def _invalid(why: str, name: str = "cursor") -> ApiError:
    given = "next_cursor" if name == "cursor" else "next"
    return ApiError(422, "invalid_parameter", f"{name}: {why}; pass {given} from the previous page unchanged")
