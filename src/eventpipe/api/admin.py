"""Who may call the /admin/ routes: one dependency, `admin_key`, which answers the calling key's name.

An admin key is one with `"admin": true` in EVENTPIPE_API_KEYS_FILE, or the
key `eventpipe up` generates for its operator (api.keyring). Any other valid
key gets 403 `{"error": "forbidden", ...}`. Routes log every action with the
name this answers, never the key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from eventpipe.api.auth import ADMIN_ONLY, Granted, admin_only
from eventpipe.api.error import ErrorBody

# The 403 of the /admin/ routes, as their OpenAPI document shows it.
REFUSED = {"error": "forbidden", "detail": ADMIN_ONLY}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorBody,
        "description": "The key is valid, but not an admin key (`forbidden`).",
        "content": {"application/json": {"example": REFUSED}},
    }
}


async def admin_key(grant: Granted) -> str:
    """The calling key's name, if it is an admin key; else 403. Needs the router's KeyCheck before it.
    `async`: it only reads the grant, so it runs on the event loop, without a hop to the thread pool."""
    admin_only(grant)
    return grant.name


AdminKey = Annotated[str, Depends(admin_key)]
