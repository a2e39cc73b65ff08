"""The environment of every process the bench starts."""

from __future__ import annotations

import os

# The one user setting the children keep: where the broker program is installed, which the bench's own
# broker uses too. Every other EVENTPIPE_ variable is left out: the user's DSNs sent the demo events into
# their real store, a retention or a session secret changed what was measured (the drain waited 600 s
# for a session its worker never joined), and the bench sets what its children need itself.
KEPT = frozenset({"EVENTPIPE_MOSQUITTO_BINARY"})


def environment(settings: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the user's EVENTPIPE_ settings (but KEPT), plus `settings`."""
    own = {name: value for name, value in os.environ.items() if not name.startswith("EVENTPIPE_") or name in KEPT}
    return own | (settings or {})
