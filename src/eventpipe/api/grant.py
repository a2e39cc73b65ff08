"""What one API key may do: the event types it sees, its rate, whether it is an admin key."""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.store.query import EventFilter


class Grant(NamedTuple):
    """A key's rights, under its name (what metrics and logs show; never the key itself)."""

    name: str
    # Only these event types, everywhere; None: every type.
    event_types: tuple[str, ...] | None = None
    # At most this many requests in any 60 seconds, per API process; None: no limit.
    requests_per_minute: int | None = None
    # May call the /admin/ endpoints (issue 16).
    admin: bool = False

    @property
    def scoped(self) -> bool:
        return self.event_types is not None

    def narrow(self, where: EventFilter) -> EventFilter:
        """`where` limited to this key's event types: every read of events passes its filter through this."""
        return where if self.event_types is None else where._replace(event_types=self.event_types)
