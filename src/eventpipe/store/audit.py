"""The erasure audit: one record of each erasure, with a keyed hash of the user id in place of the id.

The records are written and read by store.erasure's Eraser (the `erasures` table, store.schema.record).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import NamedTuple

ERASURE_COLUMNS = ("erasure_id", "erased_at", "key_name", "user_hash", "events", "dead_letters", "complete")
# A key makes the audit's hashes unrecognisable to whoever reads the table
# without it: an unkeyed hash of a short id is found by hashing every likely id.
_CONTEXT = b"eventpipe erasure key\x00"


class Erasure(NamedTuple):
    """One audit record."""

    erasure_id: str
    erased_ms: int
    key_name: str
    user_hash: str
    events: int
    dead_letters: int
    complete: bool


def user_hash(user_id: str, secret: str) -> str:
    """The keyed hash the audit keeps of a user id (HMAC-SHA256, hex)."""
    key = hashlib.sha256(_CONTEXT + secret.encode()).digest()
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()
