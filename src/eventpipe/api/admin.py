"""Admin keys: the /admin/ routes serve only a key marked admin, and name it in the log.

One dependency, `admin_key`, answers the key's name or 403. Today the admin
keys are those the composition root gives `create_app` (the key `eventpipe up`
generates for its operator, named "operator"); keys with their own names and
rights (a keys file) replace that set, and this dependency, without the routes
changing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials

from eventpipe.api.auth import Credentials
from eventpipe.api.error import ApiError


class AdminKeys:
    """The keys that may call /admin/, by name; compared as digests, like every key."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._digests = [(hashlib.sha256(key.encode()).digest(), name) for key, name in keys.items()]

    def name(self, credentials: HTTPAuthorizationCredentials | None) -> str | None:
        if credentials is None:
            return None
        offered = hashlib.sha256(credentials.credentials.encode()).digest()
        found = None
        for digest, name in self._digests:  # every key, every time: no early exit to time
            if hmac.compare_digest(digest, offered):
                found = name
        return found


def admin_key(request: Request, credentials: Credentials) -> str:
    """The name of the admin key the request carries, or 403 `forbidden`.

    Runs after the router's KeyCheck, which answers 401 to a missing or unknown key."""
    keys: AdminKeys = request.app.state.admin_keys
    name = keys.name(credentials)
    if name is None:
        raise ApiError(403, "forbidden", "this endpoint needs an admin key")
    return name
