"""Time buckets in a time zone for /stats/timeseries (`tz`): where each starts, as the zone's clocks read.

A `1d` bucket is a day of the zone's calendar, from its midnight: 23 or 25 hours long on the days its
clocks change; a `1h` bucket is an hour of its clocks, so the hour a change repeats is two buckets. The
store counts events by a unit that divides every bucket start (an hour in zones whose offset is whole
hours, 30 or 15 minutes in the others), so that each unit lies in one bucket, and each unit's count goes
to the bucket it lies in. Pure, but for reading each zone once from the tzdata package.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from zoneinfo import ZoneInfo

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# The units the store may count by, coarsest first: the fewer rows, the cheaper.
UNITS_MS = (HOUR_MS, 30 * MINUTE_MS, 15 * MINUTE_MS, 5 * MINUTE_MS, MINUTE_MS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
# Changes of clocks a bucket's edge is looked for across: more than a day or a step ever held.
MOST_CHANGES = 8


class BucketError(ValueError):
    """The buckets asked for cannot be given (too many, or a zone's offset not in whole minutes)."""


class TooManyBuckets(BucketError):
    """More buckets than asked for at most."""


@cache
def names() -> frozenset[str]:
    """The zones `tz` may name: those of the tzdata package, pinned with eventpipe's other dependencies,
    so that a zone's rules are the same on every host (the host's own files may be older or newer)."""
    return frozenset(resources.files("tzdata").joinpath("zones").read_text().split())


@cache
def zone(name: str) -> ZoneInfo:
    """The zone `name` names, from the tzdata package; KeyError for one that is not in names()."""
    if name not in names():
        raise KeyError(name)
    *folders, leaf = name.split("/")
    with resources.files("tzdata.zoneinfo").joinpath(*folders, leaf).open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


# A bucket is a run of instants with one label: the wall time floored to the step (the date, for a day)
# and, up to an hour, the offset too, so that an hour the clocks repeat is two buckets while a day or a
# 6h bucket a change of clocks passes through stays one. Its start is the run's first instant: a
# midnight the clocks skip begins the day when they jump; a change on the half hour starts an hour
# bucket there. Instants in whole seconds inside, as zone offsets are.


def floor(instant_ms: int, step_ms: int, tz: ZoneInfo) -> int:
    """Start of the bucket holding `instant_ms`."""
    second = instant_ms // 1000
    mine = _label(second, step_ms, tz)
    now = second
    for _ in range(MOST_CHANGES):
        local = datetime.fromtimestamp(now, tz)
        start = now - int((local.replace(tzinfo=None) - mine[0]).total_seconds())
        if _offset(start, tz) == local.utcoffset():  # no change of clocks between
            if _label(start - 1, step_ms, tz) != mine:
                return start * 1000
            now = start - 1  # the clocks went back just then, into the same label
            continue
        change = _change_after(start, now, tz)
        if _label(change - 1, step_ms, tz) != mine:
            return change * 1000
        now = change - 1  # the clocks went back into the same label: it began before the change
    return now * 1000


def following(start_ms: int, step_ms: int, tz: ZoneInfo) -> int:
    """Start of the bucket after the one that starts at `start_ms`."""
    mine = _label(start_ms // 1000, step_ms, tz)
    ahead = _next_wall(mine[0], step_ms)
    now = start_ms // 1000
    for _ in range(MOST_CHANGES):
        local = datetime.fromtimestamp(now, tz)
        end = now + int((ahead - local.replace(tzinfo=None)).total_seconds())
        if _offset(end - 1, tz) == local.utcoffset():  # no change of clocks before it
            if _label(end, step_ms, tz) != mine:
                return end * 1000
            now = end  # the clocks go back just then, into the same label
            continue
        change = _change_after(now, end - 1, tz)
        if _label(change, step_ms, tz) != mine:
            return change * 1000
        now = change  # the clocks went back: the same wall times again, in this bucket
    return now * 1000


def starts(since_ms: int, until_ms: int, step_ms: int, tz: ZoneInfo, most: int) -> list[int]:
    """The start of every bucket from the one holding `since_ms` to the one holding the last millisecond
    before `until_ms`; BucketError past `most` of them."""
    out = [floor(since_ms, step_ms, tz)]
    while (after := following(out[-1], step_ms, tz)) < until_ms:
        if len(out) == most:
            raise TooManyBuckets(f"the window holds more than {most} buckets")
        out.append(after)
    return out


def _label(second: int, step_ms: int, tz: ZoneInfo) -> tuple[datetime, timedelta | None]:
    local = datetime.fromtimestamp(second, tz)
    wall = local.replace(tzinfo=None, microsecond=0)
    if step_ms >= DAY_MS:
        return wall.replace(hour=0, minute=0, second=0), None
    minutes = wall.hour * 60 + wall.minute
    minutes -= minutes % (step_ms // MINUTE_MS)
    floored = wall.replace(hour=minutes // 60, minute=minutes % 60, second=0)
    return floored, local.utcoffset() if step_ms <= HOUR_MS else None


def _next_wall(wall: datetime, step_ms: int) -> datetime:
    if step_ms >= DAY_MS:
        return datetime.combine(wall.date() + timedelta(days=1), wall.time())
    return wall + timedelta(milliseconds=step_ms)


def _offset(second: int, tz: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(second, tz).utcoffset()


def _change_after(low: int, high: int, tz: ZoneInfo) -> int:
    """The second in (low, high] where the offset of `high` begins, for offsets that differ at the two:
    the change of clocks between them nearest to `high`."""
    target = _offset(high, tz)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, tz) == target:
            high = middle
        else:
            low = middle
    return high


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
    clocks (the first of two readings of a repeated hour; a time the clocks skip with the offset before
    the change, so 02:30 on the day Berlin's clocks jump is 03:30+02:00), rounded up to a millisecond as
    a window's bounds are; None for anything else, which names its own offset or is a number."""
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
