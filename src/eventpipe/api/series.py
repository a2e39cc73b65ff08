"""GET /stats/timeseries: events per time bucket, in UTC or on a time zone's clocks (`tz`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from zoneinfo import ZoneInfo

from eventpipe.api import zone
from eventpipe.api.error import ApiError, cut
from eventpipe.api.model import Bucket, Timeseries, rfc3339
from eventpipe.api.param import instant, within
from eventpipe.api.zone import DAY_MS
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "6h": 21_600_000, "1d": 86_400_000}
DEFAULT_WINDOW_MS = 86_400_000
# Beyond this a chart is unreadable and the answer large: ask for a wider interval.
MAX_BUCKETS = 10_000
# Rows the store answers for a zone's buckets, counted by units finer than a bucket: 10,000 days by hour.
MAX_UNITS = 250_000
TZ_HELP = (
    "Time zone of the buckets, an IANA name (Europe/Berlin, America/New_York): `1d` buckets start at its"
    " midnight (23 or 25 hours on the days its clocks change), `1h` and `6h` on its hours; starts and the"
    " window are given with its offset, and a since or until without an offset is read on its clocks."
    " Default: UTC."
)


def time_zone(name: str | None) -> ZoneInfo | None:
    """The zone `tz` names, or None for UTC (an empty value too, as every filter); a 422 for another name."""
    if not name or name == "UTC":
        return None
    try:
        return zone.zone(name)
    except KeyError:
        raise ApiError(
            422, "invalid_parameter", f"tz: {cut(name)!r} is not a time zone of the IANA database (Europe/Berlin, UTC)"
        ) from None


def timeseries(
    reader: Reader,
    interval: str,
    since: str | None,
    until: str | None,
    tz: ZoneInfo | None,
    only: Callable[[int, int], EventFilter],
) -> Timeseries:
    """The series of `interval` buckets over since..until; `only(since_ms, until_ms)` is the filter of its
    events (the key's types, the route's filters)."""
    step = INTERVALS_MS[interval]
    since_ms, until_ms = _bound("since", since, tz), _bound("until", until, tz)
    until_ms = time.time_ns() // 1_000_000 if until_ms is None else until_ms
    if since_ms is None:
        # Whole buckets by default: a partial first bucket would chart as a dip.
        start = max(0, until_ms - DEFAULT_WINDOW_MS)
        since_ms = start // step * step if tz is None else max(0, zone.floor(start, step, tz))
    if since_ms >= until_ms:
        raise ApiError(422, "invalid_parameter", "since must be before until")
    try:
        if tz is None:
            first, end = since_ms // step * step, -(-until_ms // step) * step
            if (end - first) // step > MAX_BUCKETS:
                raise zone.TooManyBuckets
            starts, unit, render = list(range(first, end, step)), step, rfc3339
        else:
            starts = zone.starts(since_ms, until_ms, step, tz, MAX_BUCKETS)
            unit, render = zone.unit(starts, step), partial(zone.local_rfc3339, tz=tz)
    except zone.TooManyBuckets:
        raise ApiError(
            422,
            "invalid_parameter",
            f"the window holds more than {MAX_BUCKETS} {interval} buckets: choose a wider interval or a shorter window",
        ) from None
    except zone.BucketError as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    if (until_ms - starts[0]) // unit >= MAX_UNITS:
        longest = MAX_UNITS * unit // DAY_MS
        raise ApiError(422, "invalid_parameter", f"in {tz} a window of {interval} buckets spans {longest} days at most")
    totals = zone.spread(starts, reader.timeseries(only(since_ms, until_ms), unit))
    return Timeseries(
        interval=interval,
        tz="UTC" if tz is None else tz.key,
        since=render(since_ms),
        until=render(until_ms),
        items=[Bucket(start=render(at), count=n) for at, n in zip(starts, totals, strict=True)],
    )


def _bound(name: str, value: str | None, tz: ZoneInfo | None) -> int | None:
    """A window bound as epoch ms: one without an offset on the zone's clocks, when a zone is given."""
    local = zone.local_instant(value, tz) if value and tz is not None else None
    if local is None:
        return instant(name, value)
    if name == "since" and -DAY_MS < local < 0:
        return 0  # 1970-01-01 east of UTC: no event is older than the epoch
    return within(name, value or "", local)
