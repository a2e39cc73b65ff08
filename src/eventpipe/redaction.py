"""Passwords out of everything eventpipe prints or logs: MQTT URLs, ClickHouse DSNs, any text holding them."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

MASK = "***"

# scheme://user:password@ - the password runs to the last "@" before a space, so
# an unescaped "@", "/", "?", "#" or quote in it is masked whole; a URL with an
# "@" only in its path, or quoted beside another URL, loses more than its
# password to the mask, which costs a log line some detail and never a secret.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<password>\S*)@")
# ?password=... and the like: clickhouse-connect and others take credentials as query parameters too.
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|secret|token|access_token)=)[^&#\s'\"]*", re.IGNORECASE)


def misread_password(url: str) -> bool:
    """Whether `url` may have a password holding "/", "?" or "#" as typed. A URL parser ends the host at
    the first of them, so such a password would be read in part as host, port or path, and errors about
    those parts quote it (an attack saw one echoed whole). An "@" past that point is that, or an "@" in
    the path or query, which must be percent-encoded too: only the writer knows which, so it is refused.
    So is an "@" that leaves no host after it (`u:Zq9@/Secret@host` reads as user u at no host, and its
    path quoted the rest of the password)."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        return False
    end = min([at for at in (rest.find(mark) for mark in "/?#") if at >= 0], default=len(rest))
    host = rest[:end]
    return "@" in rest[end:] or host.endswith("@")


PERCENT_ENCODE = 'percent-encode "/", "?" and "#" in its password (%2F, %3F, %23), or "@" in its path or query (%40)'


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why `url` cannot be read as typed, said without quoting any of it (a URL may carry a password, which
    a parser's error or a log line would otherwise show); None when it can be read."""
    # Blanks around a URL (a trailing newline from a secret file) are no part of it: callers strip them.
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in schemes:
        return "it must start with " + ", ".join(f"{name}://" for name in schemes)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if any(char.isspace() for char in authority):
        # The mask runs to the first blank: the rest of such a password would be logged.
        return "its user, password or host holds a blank: percent-encode it (%20)"
    if misread_password(url):
        return f"its password would be read in part as its host or path: {PERCENT_ENCODE}"
    try:
        parts = urlsplit(url)
        # chDB's netloc may be a location, `chdb://:memory:`, whose "port" is none.
        _ = parts.port if scheme != "chdb" else None
    except ValueError:  # its message quotes the part it could not read: a password, maybe
        return "it cannot be read: give its port as a number, and percent-encode non-ASCII in its user or password"
    return None


def redact(text: str) -> str:
    """`text` with the password of every URL or DSN in it replaced by ***: one URL, or a whole message."""
    text = _USERINFO.sub(lambda match: f"{match['head']}:{MASK}@", text)
    return _QUERY.sub(lambda match: f"{match['head']}{MASK}", text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts: message, arguments and traceback alike, whoever logged them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
