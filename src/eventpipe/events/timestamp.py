"""Event times: RFC 3339 strings, HTTP and RFC 2822 dates, or epoch numbers, to integer UTC milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal, localcontext

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# The digits of a time's fraction past its sixth, which datetime.fromisoformat drops.
_BEYOND_MICROSECONDS = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}[.,][0-9]{6}([0-9]+)")
_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# Eight digits that make a date are a basic ISO 8601 date (20251122): as epoch seconds they would fall
# in 1970 to 1973, which an event may not, and a producer's date was a dead letter saying it was before
# 2000. Eight that make none (12345678) stay seconds.
_BASIC_DATE = re.compile(r"[0-9]{8}")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# An HTTP date (IMF-fixdate, "Wed, 07 May 2025 08:25:14 GMT") is an RFC 2822
# date in GMT. The zone is required and must be numeric or GMT/UT/UTC/Z:
# without one, or with a name such as CST (China or Central?), the instant is
# a guess, and a guess is a dead letter rather than a wrong time.
_RFC2822 = re.compile(
    r"(?:(?P<weekday>[A-Za-z]{3}),\s*)?(?P<day>\d{1,2})\s+(?P<month>[A-Za-z]{3})\s+(?P<year>\d{4})\s+"
    r"(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?\s+(?P<zone>[+-]\d{4}|GMT|UTC|UT|Z)",
    # ASCII: `\d` and `\s` took other scripts' digits and spaces (full-width ones), which RFC 2822 has not.
    re.IGNORECASE | re.ASCII,
)
ACCEPTED = (
    "RFC 3339 (2025-05-07T08:25:14Z, or with a space for the T; also 20250507T082514Z or 20250507), an HTTP or"
    " RFC 2822 date with its zone"
    " (Wed, 07 May 2025 08:25:14 GMT; Wed, 07 May 2025 10:25:14 +0200), or epoch seconds or milliseconds"
)

# Below 2000-01-01 a timestamp is almost always a unit or default-value bug
# (0, seconds read as ms), not a real event; rejecting it keeps it visible.
EARLIEST_MS = 946_684_800_000
# From 2^32 s (2106-02-07T06:28:16Z) on, the 32-bit time range ClickHouse keeps of each part
# (system.parts' min_time and max_time) wraps, and the counts, which trust those ranges
# (store.tally), would leave such events out while pages served them: refused, whatever the skew.
LATEST_MS = 2**32 * 1000


def to_epoch_ms(value: object, *, up: bool = False) -> int:
    """Return the instant as epoch milliseconds, or raise ValueError saying why not.

    An instant between two milliseconds goes to the earlier one (a number to the nearer), as events
    have always been stored; with `up`, to the later one, which is what a window's bounds need:
    events are whole milliseconds, and one is at or after an inclusive `since`, or before an
    exclusive `until`, exactly when it is so against the bound rounded up.
    """
    if not up and type(value) is str and value[4:5] == "-" and len(value) <= 64 and "\x00" not in value:
        # The form nearly every producer sends, read at once. For a text that datetime reads as it is (no
        # space around it, no leap second, no RFC 2822) the general path below ends in this same reading,
        # at twice the cost, and every message pays it (events.contract).
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return ((moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - _EPOCH) // _ONE_MS
    if isinstance(value, bool):
        raise ValueError("timestamp must be a string or a number, not a boolean")
    if isinstance(value, int | float):
        return _from_decimal(Decimal(repr(value))) if up else _from_number(float(value))
    if isinstance(value, str):
        text = value.strip()
        # A "-" after four digits is a date: skip the number pattern (most strings are dates).
        if text[4:5] != "-" and _NUMERIC.fullmatch(text) and not _basic_date(text):
            return _from_decimal(Decimal(text)) if up else _from_number(float(text))
        moment = _from_rfc3339(text)
        if not up:
            return (moment - _EPOCH) // _ONE_MS
        # The parser keeps microseconds and drops finer digits: any of them not 0 puts the instant past
        # the microsecond it kept, which matters when that microsecond is a whole millisecond. Counted in
        # milliseconds, not added to the datetime: past its last microsecond (year 9999) that overflowed.
        finer = _BEYOND_MICROSECONDS.search(text)
        past = bool(finer and finer.group(1).strip("0")) and moment.microsecond % 1000 == 0
        return -((_EPOCH - moment) // _ONE_MS) + int(past)
    raise ValueError(f"timestamp must be a string or a number, not {type(value).__name__}")


def _basic_date(text: str) -> bool:
    if not _BASIC_DATE.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)  # which refuses 12345678 and 20250231
    except ValueError:
        return False
    return True


def _to_ms(magnitude: float) -> int:
    """The power of ten that takes a number of this size to milliseconds.

    The magnitude tells the unit: 1e11 seconds is the year 5138, 1e11 ms is 1973."""
    if magnitude < 1e11:
        return 3
    if magnitude < 1e14:
        return 0
    if magnitude < 1e17:
        return -3
    return -6


def _from_number(number: float) -> int:
    exponent = _to_ms(abs(number))
    scale: int = 10 ** abs(exponent)
    return round(number * scale) if exponent >= 0 else round(number / scale)


def _from_decimal(number: Decimal) -> int:
    # Exact: a float's error can put a whole millisecond past the next one when rounded up, and so can
    # the default context's 28 digits (a bound is 64 characters at most).
    exponent = _to_ms(abs(float(number)))
    with localcontext(prec=100):
        return int(number.scaleb(exponent).to_integral_value(rounding=ROUND_CEILING))


# Up to a second 60, in RFC 3339's form (the rest, fraction and offset, as it is).
_LEAP_SECOND = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:)60(?=[.,Z+-]|$)", re.ASCII)


def _from_rfc3339(text: str) -> datetime:
    if len(text) > 64:
        raise ValueError("timestamp string is too long")
    if "\x00" in text:
        # datetime.fromisoformat stops reading at a NUL: "...Z\x00junk" was taken for the time before it.
        raise ValueError(f"timestamp {text!r} holds a NUL character")
    # Lower-case t and z are RFC 3339 too; the text itself stays as sent, for the
    # RFC 2822 reading (whose "Z" zone is not an offset) and for the error's quote.
    iso = text.replace("t", "T", 1)
    if iso[-1:] == "z":
        iso = iso[:-1] + "Z"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        leap = _LEAP_SECOND.match(iso)
        if leap is None:
            # Tried second: most producers send RFC 3339, and this keeps their path short.
            return _from_rfc2822(text)
        # RFC 3339 allows second 60 (a leap second), which datetime cannot hold: read, as PostgreSQL
        # does, as the next minute's start. It was a dead letter, and lost from backfills that held one.
        try:
            moment = datetime.fromisoformat(leap.group(1) + "59" + iso[leap.end() :]) + timedelta(seconds=1)
        except OverflowError:  # the leap second ending year 9999
            raise ValueError(f"timestamp {text!r} is past the year 9999") from None
    if moment.tzinfo is None:
        # No offset given: UTC is the only reading that does not depend on
        # where the worker happens to run.
        moment = moment.replace(tzinfo=UTC)
    return moment


def _from_rfc2822(text: str) -> datetime:
    match = _RFC2822.fullmatch(text)
    if match is None:
        raise ValueError(f"timestamp {text!r} is in no accepted form: {ACCEPTED}")
    fields = match.groupdict()
    month = fields["month"].lower()
    if month not in _MONTHS:
        raise ValueError(f"timestamp {text!r}: {fields['month']!r} is not a month name (Jan to Dec)")
    zone = fields["zone"]
    offset = timedelta(0)
    if zone[0] in "+-":
        hours, minutes = int(zone[1:3]), int(zone[3:5])
        if hours > 23 or minutes > 59:
            raise ValueError(f"timestamp {text!r}: zone {zone} is not an offset")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    try:
        moment = datetime(
            int(fields["year"]),
            _MONTHS.index(month) + 1,
            int(fields["day"]),
            int(fields["hour"]),
            int(fields["minute"]),
            int(fields["second"] or 0),
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise ValueError(f"timestamp {text!r} is not a real date: {exc}") from None
    weekday = fields["weekday"]
    if weekday is not None and weekday.lower() != _WEEKDAYS[moment.weekday()]:
        # Two fields that disagree: which one the producer meant is a guess.
        day = f"{moment.day:02d} {_MONTHS[moment.month - 1].title()} {moment.year}"
        raise ValueError(f"timestamp {text!r}: {day} is a {_WEEKDAYS[moment.weekday()].title()}, not a {weekday}")
    return moment
