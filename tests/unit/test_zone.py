"""Buckets on a time zone's clocks: where each starts, on ordinary days and on the days clocks change."""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from eventpipe.api.zone import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    BucketError,
    floor,
    local_instant,
    local_rfc3339,
    spread,
    starts,
    unit,
)

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def rendered(bucket_starts: list[int], tz: ZoneInfo) -> list[str]:
    return [local_rfc3339(start, tz).replace(".000", "") for start in bucket_starts]


def test_days_start_at_the_zones_midnight_and_last_23_or_25_hours_when_its_clocks_change() -> None:
    # Berlin: clocks forward on 2026-03-29 at 02:00, back on 2026-10-25 at 03:00.
    spring = starts(ms("2026-03-28T00:00+01:00"), ms("2026-03-31T00:00+02:00"), DAY_MS, BERLIN, 100)
    assert rendered(spring, BERLIN) == [
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    ]
    assert [b - a for a, b in itertools.pairwise(spring)] == [24 * HOUR_MS, 23 * HOUR_MS]
    autumn = starts(ms("2026-10-24T00:00+02:00"), ms("2026-10-27T00:00+01:00"), DAY_MS, BERLIN, 100)
    assert [b - a for a, b in itertools.pairwise(autumn)] == [24 * HOUR_MS, 25 * HOUR_MS]


def test_the_hour_clocks_repeat_is_two_buckets_and_the_hour_they_skip_none() -> None:
    autumn = starts(ms("2026-10-25T01:00+02:00"), ms("2026-10-25T04:00+01:00"), HOUR_MS, BERLIN, 100)
    assert rendered(autumn, BERLIN) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    spring = starts(ms("2026-03-29T01:00+01:00"), ms("2026-03-29T04:00+02:00"), HOUR_MS, BERLIN, 100)
    assert rendered(spring, BERLIN) == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]


def test_a_midnight_the_clocks_skip_begins_the_day_when_they_jump() -> None:
    # Sao Paulo moved its clocks forward at midnight (2018-11-04 00:00 -03 became 01:00 -02).
    days = starts(ms("2018-11-03T00:00-03:00"), ms("2018-11-06T00:00-02:00"), DAY_MS, SAO_PAULO, 100)
    assert rendered(days, SAO_PAULO) == [
        "2018-11-03T00:00:00-03:00",
        "2018-11-04T01:00:00-02:00",
        "2018-11-05T00:00:00-02:00",
    ]
    assert floor(ms("2018-11-04T12:00-02:00"), DAY_MS, SAO_PAULO) == ms("2018-11-04T01:00-02:00")


def test_six_hour_buckets_follow_the_zones_hours_whatever_its_offset() -> None:
    buckets = starts(ms("2026-03-01T00:00+05:30"), ms("2026-03-02T00:00+05:30"), 6 * HOUR_MS, KOLKATA, 100)
    assert rendered(buckets, KOLKATA) == [f"2026-03-01T{h:02}:00:00+05:30" for h in (0, 6, 12, 18)]
    # A half-hour offset: counted by the half hour, each half hour inside one bucket.
    assert unit(buckets, 6 * HOUR_MS) == 30 * MINUTE_MS
    assert unit(starts(0, DAY_MS * 3, DAY_MS, BERLIN, 100), DAY_MS) == HOUR_MS
    assert unit(starts(0, HOUR_MS, 5 * MINUTE_MS, BERLIN, 100), 5 * MINUTE_MS) == 5 * MINUTE_MS


def test_a_window_with_more_buckets_than_allowed_is_refused() -> None:
    with pytest.raises(BucketError, match="more than 24 buckets"):
        starts(ms("2026-03-01T00:00Z"), ms("2026-03-02T00:00:01Z"), HOUR_MS, BERLIN, 24)
    assert len(starts(ms("2026-03-01T00:00+01:00"), ms("2026-03-02T00:00+01:00"), HOUR_MS, BERLIN, 24)) == 24


def test_a_zone_offset_in_seconds_has_no_unit_to_count_by() -> None:
    # Local mean time: Amsterdam was +00:19:32 until 1937, so no minute divides its midnights.
    amsterdam = ZoneInfo("Europe/Amsterdam")
    days = starts(ms("1930-01-01T00:00Z"), ms("1930-01-03T00:00Z"), DAY_MS, amsterdam, 100)
    with pytest.raises(BucketError, match="not in whole minutes"):
        unit(days, DAY_MS)


def test_each_units_count_goes_to_the_bucket_it_lies_in() -> None:
    buckets = [0, 23 * HOUR_MS, 48 * HOUR_MS]
    assert spread(buckets, [(0, 1), (22 * HOUR_MS, 2), (23 * HOUR_MS, 4), (47 * HOUR_MS, 8), (48 * HOUR_MS, 16)]) == [
        3,
        12,
        16,
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", "2026-03-01T00:00:00+01:00"),
        ("20260301", "2026-03-01T00:00:00+01:00"),
        ("2026-07-01T09:30", "2026-07-01T09:30:00+02:00"),
        ("2026-07-01 09:30:00.0005", "2026-07-01T09:30:00.001+02:00"),
    ],
)
def test_a_bound_without_an_offset_is_read_on_the_zones_clocks(text: str, expected: str) -> None:
    assert local_instant(text, BERLIN) == ms(expected)


@pytest.mark.parametrize("text", ["2026-03-01T00:00Z", "2026-03-01T00:00+05:00", "1795392000", "1795392000000", "x"])
def test_a_bound_with_its_own_offset_or_a_number_is_left_to_the_usual_reading(text: str) -> None:
    assert local_instant(text, BERLIN) is None


def test_starts_are_rendered_with_the_zones_offset_then() -> None:
    assert local_rfc3339(ms("2026-01-15T12:00:00.250Z"), BERLIN) == "2026-01-15T13:00:00.250+01:00"
    assert local_rfc3339(ms("2026-07-15T12:00:00Z"), BERLIN) == "2026-07-15T14:00:00.000+02:00"
    assert datetime.fromisoformat(local_rfc3339(0, KOLKATA)).astimezone(UTC) == datetime(1970, 1, 1, tzinfo=UTC)


CHATHAM = ZoneInfo("Pacific/Chatham")


def test_a_change_of_clocks_off_the_hour_starts_an_hour_bucket_where_the_clocks_jump() -> None:
    # Chatham goes from 02:45 +12:45 to 03:45 +13:45: an event at 03:50 was in a bucket starting after it,
    # and left out of the answer.
    assert floor(ms("2026-09-27T03:50+13:45"), HOUR_MS, CHATHAM) == ms("2026-09-27T03:45+13:45")
    hours = starts(ms("2026-09-27T01:30+12:45"), ms("2026-09-27T05:00+13:45"), HOUR_MS, CHATHAM, 100)
    assert rendered(hours, CHATHAM) == [
        "2026-09-27T01:00:00+12:45",
        "2026-09-27T02:00:00+12:45",
        "2026-09-27T03:45:00+13:45",
        "2026-09-27T04:00:00+13:45",
    ]
    assert unit(hours, HOUR_MS) == 15 * MINUTE_MS


def test_a_change_back_just_after_midnight_leaves_the_minutes_repeated_on_the_day_they_read() -> None:
    # St John's set its clocks back from 00:01 to 23:01 (2009-11-01): an hour read 23:xx went on the 1st.
    st_johns = ZoneInfo("America/St_Johns")
    assert floor(ms("2009-10-31T23:30-03:30"), HOUR_MS, st_johns) == ms("2009-10-31T23:01-03:30")
    assert floor(ms("2009-10-31T23:30-03:30"), DAY_MS, st_johns) == ms("2009-10-31T23:01-03:30")
    assert floor(ms("2009-11-01T12:00-03:30"), DAY_MS, st_johns) == ms("2009-11-01T00:00-03:30")


ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "America/St_Johns",
    "America/Havana",
    "Atlantic/Azores",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "Antarctica/Casey",
    "Europe/Dublin",
)


@pytest.mark.parametrize("name", ZONES)
def test_every_instant_lies_in_the_bucket_its_floor_starts_and_buckets_only_move_forward(name: str) -> None:
    # Around every change of clocks from 2005 to 2030: the bucket found for an instant and the list of
    # buckets agree, or an event is counted under a bucket that does not hold it, or not at all.
    tz = ZoneInfo(name)
    changes = [
        second
        for second in range(ms("2005-01-01T00:00Z") // 1000, ms("2030-01-01T00:00Z") // 1000, 3600)
        if datetime.fromtimestamp(second, tz).utcoffset() != datetime.fromtimestamp(second + 3600, tz).utcoffset()
    ]
    for step in (15 * MINUTE_MS, HOUR_MS, 6 * HOUR_MS, DAY_MS):
        for change in changes[::3]:
            low, high = (change - 2 * 86_400) * 1000, (change + 2 * 86_400) * 1000
            buckets = starts(low, high, step, tz, 10_000)
            assert buckets == sorted(set(buckets)), (name, step, change)
            for instant in range(low, high, 7 * 60_000 + 13_000):
                start = floor(instant, step, tz)
                assert start <= instant, (name, step, instant)
                assert buckets[bisect.bisect_right(buckets, instant) - 1] == start, (name, step, instant)
