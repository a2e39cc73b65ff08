"""Event times: RFC 3339 strings or epoch numbers, to integer UTC milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]+)?")

# Below 2000-01-01 a timestamp is almost always a unit or default-value bug
# (0, seconds read as ms), not a real event; rejecting it keeps it visible.
EARLIEST_MS = 946_684_800_000


def to_epoch_ms(value: object) -> int:
    """Return the instant as epoch milliseconds, or raise ValueError saying why not."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be a string or a number, not a boolean")
    if isinstance(value, int | float):
        return _from_number(float(value))
    if isinstance(value, str):
        text = value.strip()
        # A "-" after four digits is a date: skip the number pattern (most strings are dates).
        if text[4:5] != "-" and _NUMERIC.fullmatch(text):
            return _from_number(float(text))
        return _from_rfc3339(text)
    raise ValueError(f"timestamp must be a string or a number, not {type(value).__name__}")


def _from_number(number: float) -> int:
    # The magnitude tells the unit: 1e11 seconds is the year 5138, 1e11 ms is 1973.
    magnitude = abs(number)
    if magnitude < 1e11:
        return round(number * 1000)
    if magnitude < 1e14:
        return round(number)
    if magnitude < 1e17:
        return round(number / 1000)
    return round(number / 1_000_000)


def _from_rfc3339(text: str) -> int:
    if len(text) > 64:
        raise ValueError("timestamp string is too long")
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text.replace("t", "T", 1))
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither RFC 3339 nor epoch seconds/milliseconds") from None
    if moment.tzinfo is None:
        # No offset given: UTC is the only reading that does not depend on
        # where the worker happens to run.
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS
