"""Time buckets in a time zone for /stats/timeseries (`tz`): where each starts, as the zone's clocks read.

A `1d` bucket is a day of the zone's calendar, from its midnight: 23 or 25 hours long on the days its
clocks change; a `1h` bucket is an hour of its clocks, so the hour a change repeats is two buckets. The
store counts events by a unit that divides every bucket start (an hour in zones whose offset is whole
hours, 30 or 15 minutes in the others), so that each unit lies in one bucket, and each unit's count goes
to the bucket it lies in. Pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# The units the store may count by, coarsest first: the fewer rows, the cheaper.
UNITS_MS = (HOUR_MS, 30 * MINUTE_MS, 15 * MINUTE_MS, 5 * MINUTE_MS, MINUTE_MS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


class BucketError(ValueError):
    """The buckets asked for cannot be given (too many, or a zone's offset not in whole minutes)."""


@cache
def names() -> frozenset[str]:
    """The zones `tz` may name: the IANA database as this host's Python reads it (the system's, or the
    tzdata package)."""
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The zone `name` names; KeyError for one that is not in names()."""
    if name not in names():
        raise KeyError(name)
    return ZoneInfo(name)


def floor(instant_ms: int, step_ms: int, tz: ZoneInfo) -> int:
    """Start of the bucket holding `instant_ms`: the zone's wall time there, down to the step's multiple
    (its midnight for a day), as an instant. An hour repeated by a change of clocks stays apart from
    its twin; a midnight the clocks skip begins the day when they jump."""
    local = datetime.fromtimestamp(instant_ms // 1000, tz)
    if step_ms >= DAY_MS:
        start = local.replace(hour=0, minute=0, second=0, fold=0)
    else:
        minutes = local.hour * 60 + local.minute
        minutes -= minutes % (step_ms // MINUTE_MS)
        start = local.replace(hour=minutes // 60, minute=minutes % 60, second=0)
    return (start - EPOCH) // ONE_MS


def starts(since_ms: int, until_ms: int, step_ms: int, tz: ZoneInfo, most: int) -> list[int]:
    """The start of every bucket from the one holding `since_ms` to the one holding the last millisecond
    before `until_ms`; BucketError past `most` of them."""
    out = [floor(since_ms, step_ms, tz)]
    while True:
        nearest = out[-1] + step_ms
        following = floor(nearest, step_ms, tz)
        while following <= out[-1]:  # a bucket longer than its step: a 25-hour day, a 7-hour 6h
            nearest += HOUR_MS
            following = floor(nearest, step_ms, tz)
        if following >= until_ms:
            return out
        if len(out) == most:
            raise BucketError(f"the window holds more than {most} buckets")
        out.append(following)


def unit(bucket_starts: list[int], step_ms: int) -> int:
    """The coarsest unit, at most a step, of which every bucket start is a multiple; BucketError where
    none is (a zone's offset then was not whole minutes: local mean time, before standard time)."""
    for candidate in UNITS_MS:
        if candidate <= step_ms and all(start % candidate == 0 for start in bucket_starts):
            return candidate
    raise BucketError("the zone's offset in this window is not in whole minutes: choose a later since, or UTC")


def spread(bucket_starts: list[int], counts: Iterable[tuple[int, int]]) -> list[int]:
    """The count of each bucket, from counts per unit (unit start, count) of units each inside one bucket."""
    totals = [0] * len(bucket_starts)
    for unit_start, count in counts:
        at = bisect.bisect_right(bucket_starts, unit_start) - 1
        if at >= 0:
            totals[at] += count
    return totals


def local_rfc3339(instant_ms: int, tz: ZoneInfo) -> str:
    """2026-03-29T03:00:00.000+02:00: the instant as the zone's clocks read it, with its offset."""
    moment = datetime.fromtimestamp(instant_ms // 1000, tz).replace(microsecond=instant_ms % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds")


def local_instant(text: str, tz: ZoneInfo) -> int | None:
    """Epoch ms of a date or date-time without offset (2026-03-01, 2026-03-01T09:30), read on the zone's
    clocks (the first of two readings of a repeated hour, the one after a skipped time), rounded up to
    a millisecond as a window's bounds are; None for anything else, which names its own offset or is a
    number."""
    text = text.strip()
    if len(text) < 8 or not text[:4].isdigit():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return None
    if text.isdigit() and len(text) != 8:  # only YYYYMMDD of the numbers is a date, as the events' parser reads
        return None
    return -((EPOCH - moment.replace(tzinfo=tz)) // ONE_MS)
