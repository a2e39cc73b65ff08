"""A Ctrl-C while the command's modules load is a stop the user asked for: exit 130 saying so.

Importing eventpipe.cli.main takes about 0.2 s (pydantic, the settings). A
KeyboardInterrupt raised in it comes before main() can catch one: Python
printed its traceback and died of the signal, and one that landed inside
pydantic-core's own import was its PanicException and exit 1. Imported first
by eventpipe.cli.main, this stops the process at once instead (nothing has
started yet), until `loaded()` puts Python's handler back. A SIGINT ignored
or handled by someone else (a background job, a test runner) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

INTERRUPTED = b"eventpipe: interrupted\n"


def _stop(_signum: int, _frame: FrameType | None) -> None:
    os.write(2, INTERRUPTED)
    os._exit(130)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    # ValueError: imported on a thread other than the main one, where no handler can be set.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, _stop)


def loaded() -> None:
    """Python's own handler again: from here on main() turns a KeyboardInterrupt into `interrupted`, 130."""
    if signal.getsignal(signal.SIGINT) is _stop:
        signal.signal(signal.SIGINT, signal.default_int_handler)
