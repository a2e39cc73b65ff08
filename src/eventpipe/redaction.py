"""Passwords out of everything eventpipe prints or logs: MQTT URLs, ClickHouse DSNs, any text holding them."""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@ - the password runs to the last "@" of the word (up
# to a space or a quote), so an unescaped "@", "/", "?" or "#" in it is masked
# whole; a URL that only has an "@" in its path loses its port and path to the
# mask, which costs a log line some detail and never a secret.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<password>[^\s'\"]*)@")
# ?password=... and the like: clickhouse-connect and others take credentials as query parameters too.
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|secret|token|access_token)=)[^&#\s'\"]*", re.IGNORECASE)


def misread_password(url: str) -> bool:
    """Whether `url` has a password holding "/", "?" or "#" as typed. A URL parser ends the host at the
    first of them, so the password would be read in part as host, port or path, and errors about those
    parts quote them (an attack saw a password echoed whole). Such a URL must be refused, not used."""
    _scheme, sep, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0] if sep else ""
    cuts = [at for at in (userinfo.find(mark) for mark in "/?#") if at >= 0]
    if not cuts:
        return False  # no password, or one a parser reads whole
    _user, colon, start = userinfo[: min(cuts)].partition(":")
    # "host:8123/db?x=a@b" has an "@" in its query, and a port where a password would start.
    return bool(colon) and not start.isdigit()


PERCENT_ENCODE = 'percent-encode "/" as %2F, "?" as %3F and "#" as %23 in its password'


def redact(text: str) -> str:
    """`text` with the password of every URL or DSN in it replaced by ***: one URL, or a whole message."""
    text = _USERINFO.sub(lambda match: f"{match['head']}:{MASK}@", text)
    return _QUERY.sub(lambda match: f"{match['head']}{MASK}", text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts: message, arguments and traceback alike, whoever logged them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
