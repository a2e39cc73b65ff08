"""Bearer keys: every data endpoint needs one of EVENTPIPE_API_KEYS."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventpipe.api.error import ApiError

CHALLENGE = {"WWW-Authenticate": "Bearer"}
# auto_error off: a missing header gets our error shape, not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="One of the keys in EVENTPIPE_API_KEYS.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class KeyCheck:
    """A FastAPI dependency that admits a request only with a known key."""

    def __init__(self, keys: Sequence[str]) -> None:
        # Compared as digests: equal lengths, so the comparison time says
        # nothing about a key's length or its first matching characters.
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def __call__(self, credentials: Credentials) -> None:
        if credentials is None:
            raise ApiError(401, "unauthorized", "send the header 'Authorization: Bearer <key>'", CHALLENGE)
        offered = hashlib.sha256(credentials.credentials.encode()).digest()
        matched = False
        for digest in self._digests:  # every key, every time: no early exit to time
            matched |= hmac.compare_digest(digest, offered)
        if not matched:
            raise ApiError(401, "unauthorized", "the API key is not valid", CHALLENGE)
