"""The console every command writes to: its log lines, redacted, and its warnings about how it was run."""

from __future__ import annotations

import logging
import sys
import threading
from urllib.parse import urlsplit

from eventpipe.redaction import RedactingFormatter

log = logging.getLogger("eventpipe")
LINE = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(level: str) -> None:
    # Every line passes through redaction: a URL or DSN logged by eventpipe,
    # a library or a traceback never shows its password.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LINE)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    threading.excepthook = _log_thread_crash
    # paho and uvicorn are chatty at INFO about things eventpipe already reports.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # ClickHouse's driver and its HTTP pool warn of each failed attempt, in their words, before the failure
    # reaches eventpipe, which says it once, classified and naming the DSN's setting (store.failure). At
    # DEBUG they say all they say.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for chatty in ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync"):
            logging.getLogger(chatty).setLevel(logging.ERROR)


def warn_password_flag(command: str, flag: str, url: str, variable: str) -> None:
    """Say that a password given in `flag` is readable by others, and where to put it instead."""
    try:
        password = urlsplit(url).password
    except ValueError:  # unreadable: the command refuses it, without quoting it
        return
    if password:
        print(
            f"eventpipe {command}: warning: the password in {flag} shows in `ps` to every user of this machine "
            f"and stays in your shell's history; set {variable} instead",
            file=sys.stderr,
            flush=True,
        )


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    # Through the logging handler rather than straight to stderr, so it is redacted too.
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    log.error("%s stopped on an unexpected error: %s", name, args.exc_type.__name__, exc_info=args.exc_value)
