"""Bearer keys: every data endpoint needs a known key (api.keyring), within its rate (api.throttle)
and its share of the requests in flight (api.flight).

The key's grant is recorded on the request: routes narrow their reads to its
event types (`Granted`, then `grant.narrow(filter)`), and the metrics count the
request under its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventpipe.api.error import ApiError
from eventpipe.api.flight import seat, seats
from eventpipe.api.grant import Grant
from eventpipe.api.keyfile import digest
from eventpipe.api.keyring import Keyring
from eventpipe.api.slot import Slots
from eventpipe.api.throttle import Throttle, retry_after

CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Says where admin keys come from: with EVENTPIPE_API_KEYS alone there is none, and the 403 did not say so.
ADMIN_ONLY = (
    'this endpoint needs an admin key: one marked "admin": true in EVENTPIPE_API_KEYS_FILE '
    "(no key of EVENTPIPE_API_KEYS is)"
)
# auto_error off: a missing header gets our error shape, not FastAPI's 403.
bearer = HTTPBearer(
    auto_error=False, description="A key from EVENTPIPE_API_KEYS, or one whose SHA-256 is in EVENTPIPE_API_KEYS_FILE."
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class KeyCheck:
    """A FastAPI dependency that admits a request only with a known key, within the key's rate
    and its share of `slots`, the requests in flight (api.flight)."""

    def __init__(self, keyring: Keyring, throttle: Throttle | None = None, slots: Slots | None = None) -> None:
        self.keyring = keyring
        self._throttle = throttle or Throttle()
        self._slots = slots or seats()
        self._generation = keyring.generation

    # Async, so that it runs on the event loop instead of taking a hop through
    # the thread pool on every request (about 0.7 ms of the API's cost per
    # request here, with the other checks). Only the stat is made on the loop;
    # a changed keys file is read in the pool.
    async def __call__(self, request: Request, credentials: Credentials) -> Grant:
        if credentials is None:
            raise ApiError(401, "unauthorized", "send the header 'Authorization: Bearer <key>'", CHALLENGE)
        if self.keyring.stale():
            await to_thread.run_sync(self.keyring.refresh)
        offered = digest(credentials.credentials)
        grant = self.keyring.admitted_digest(offered)
        if grant is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", CHALLENGE)
        request.state.grant = grant  # before the rate check: a refusal is counted under the key too
        request.state.offered = offered  # the key's digest, for still_granted: the key itself is not kept
        if self._generation != self.keyring.generation:
            self._generation = self.keyring.generation
            self._throttle.keep_only([known.name for known in self.keyring.grants()])
        wait = self._throttle.admit(grant.name, grant.requests_per_minute)
        if wait:
            seconds = retry_after(wait)
            raise ApiError(
                429,
                "rate_limited",
                f"this key may make {grant.requests_per_minute} requests per minute; retry in {seconds} s",
                {"Retry-After": str(seconds)},
            )
        try:
            seat(request, self._slots, grant.name)  # after the rate: a refused request holds no seat
        except ApiError:
            self.uncount(grant)
            raise
        return grant

    def still_granted(self, request: Request) -> Callable[[], bool]:
        """For answers that outlast this check (an export's pages): whether the key of `request` is still
        admitted with the same event types, after reading the keys file again if it changed (renamed, it is
        the same key), so that one revoked or narrowed meanwhile stops getting data. Blocking: for a thread."""
        offered, grant = request.state.offered, request.state.grant

        def check() -> bool:
            self.keyring.refresh()
            now = self.keyring.admitted_digest(offered)
            return now is not None and now.event_types == grant.event_types

        return check

    def uncount(self, grant: Grant) -> None:
        """Take a request this check let through out of its key's rate: it was refused after all (no seat,
        no export slot), and a client that waits as Retry-After says must get through."""
        if grant.requests_per_minute is not None:
            self._throttle.give_back(grant.name)


# The checks below only look at the request: `async`, they run on the loop
# rather than one pool hop each.
async def granted(request: Request) -> Grant:
    """The grant KeyCheck recorded; a route outside the keyed router has none and answers 401."""
    grant = getattr(request.state, "grant", None)
    if not isinstance(grant, Grant):
        raise ApiError(401, "unauthorized", "send the header 'Authorization: Bearer <key>'", CHALLENGE)
    return grant


Granted = Annotated[Grant, Depends(granted)]


async def every_type(grant: Granted) -> None:
    """For routes that serve data of every event type (dead letters): a key limited to some types gets 403."""
    if grant.scoped:
        raise ApiError(403, "forbidden", "this key sees only some event types, and this endpoint serves all of them")


def admin_only(grant: Granted) -> None:
    """For the /admin/ routes: a key without `"admin": true` gets 403."""
    if not grant.admin:
        raise ApiError(403, "forbidden", ADMIN_ONLY)
