"""EVENTPIPE_ variables that no setting reads: a misspelt one (EVENTPIPE_RETENTION_DAY) ran on the default
without a word, so `eventpipe` names each at start, with the setting it most likely meant."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from eventpipe.config import Settings

PREFIX = "EVENTPIPE_"
# Read by the test suite and the fault runs themselves, never by eventpipe.
OTHERS = ("EVENTPIPE_TEST_", "EVENTPIPE_FAULT_")


def unknown(environ: Mapping[str, str]) -> list[str]:
    """Each EVENTPIPE_ name in `environ` no setting reads (in any case, as settings are read), with a hint."""
    known = [PREFIX + name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known or upper.startswith(OTHERS):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found


def warning(environ: Mapping[str, str]) -> str | None:
    """One line naming the unknown variables (never their values), or None."""
    names = unknown(environ)
    if not names:
        return None
    return f"eventpipe: warning: no setting reads {', '.join(names)}: ignored (README, Configuration)"
