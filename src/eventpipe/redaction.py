"""Passwords out of everything eventpipe prints or logs: MQTT URLs, ClickHouse DSNs, any text holding them."""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@ - the password runs to the last "@" before the path,
# as urlsplit reads it, so an unescaped "@" in a password is masked whole.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<password>[^\s/]*)@")
# ?password=... and the like: clickhouse-connect and others take credentials as query parameters too.
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|secret|token|access_token)=)[^&#\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URL or DSN in it replaced by ***: one URL, or a whole message."""
    text = _USERINFO.sub(lambda match: f"{match['head']}:{MASK}@", text)
    return _QUERY.sub(lambda match: f"{match['head']}{MASK}", text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts: message, arguments and traceback alike, whoever logged them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
