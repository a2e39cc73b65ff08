"""EVENTPIPE_ variables as a user sets them: those that no setting reads (a misspelt one,
EVENTPIPE_RETENTION_DAY, ran on the default without a word, so `eventpipe` names each at start, with the
setting it most likely meant), and what is wrong with those that it does read, named by variable."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from pydantic import ValidationError

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


def settings_problem(exc: ValidationError, flags: dict[str, str] | None = None) -> str:
    """What is wrong with which setting, without the values: pydantic would echo every input, keys included.
    `flags`: the settings a command line gave, by field, named by their flag instead of their variable."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        source = (flags or {}).get(field) or f"EVENTPIPE_{field.upper()}"
        if not field:
            # A problem between settings names them as variables: those the command line gave go by their flag
            # (`publish --mqtt-url mqtt://... --ca-file CA` was told to change two variables it never set).
            for given, flag in (flags or {}).items():
                message = re.sub(rf"\bEVENTPIPE_{given.upper()}\b", flag, message)
        problems.append(f"{field} ({source}): {message}" if field else message)
    return "invalid settings: " + "; ".join(problems)
