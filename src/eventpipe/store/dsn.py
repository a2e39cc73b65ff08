"""ClickHouse DSNs: the scheme picks a server (http://, https://) or the embedded engine (chdb://)."""

from __future__ import annotations

from eventpipe.redaction import url_problem

SCHEMES = ("http", "https", "chdb")


def problem(dsn: str) -> str | None:
    """Why `dsn` is no ClickHouse DSN, without quoting it (it may hold a password); None when it is one."""
    return url_problem(dsn, SCHEMES)
