"""GET /stats/timeseries on a time zone's clocks (`tz`), over the real engine: days from its midnight."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from eventpipe.store.writer import Writer
from tests.support.api import AUTH, KEY, api_client, event


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# Around Berlin's change of clocks on 2026-10-25 (03:00 +02:00 became 02:00 +01:00): which day each
# event falls on differs in UTC and in Berlin.
EVENTS = {
    "late on the 24th": "2026-10-24T21:59:00Z",  # 23:59 +02:00
    "early on the 25th": "2026-10-24T22:30:00Z",  # 00:30 +02:00, still the 24th in UTC
    "late on the 25th": "2026-10-25T22:59:00Z",  # 23:59 +01:00
    "early on the 26th": "2026-10-25T23:00:00Z",  # 00:00 +01:00, still the 25th in UTC
    # Chatham's clocks jump from 02:45 to 03:45 (+12:45 to +13:45) on 2026-09-27.
    "after Chatham's jump": "2026-09-26T14:05:00Z",  # 2026-09-27T03:50 +13:45
}


@pytest.fixture
def api(clickhouse_dsn: str, writer: Writer) -> TestClient:
    rows = [
        event("events/click", {"event_id": name, "timestamp": ms(at), "user_id": "u1"}, ms(at))
        for name, at in EVENTS.items()
    ]
    assert writer.insert_events(rows) == []
    return api_client(clickhouse_dsn, keys=(KEY,))


def series(api: TestClient, **params: str) -> dict[str, object]:
    response = api.get("/stats/timeseries", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_days_are_the_zones_days_from_its_midnight_across_a_change_of_clocks(api: TestClient) -> None:
    # In UTC, a Berlin user's evening fell on the next day's bar and their early morning on the day before.
    days = series(api, interval="1d", since="2026-10-24", until="2026-10-27", tz="Europe/Berlin")
    assert days["tz"] == "Europe/Berlin"
    assert (days["since"], days["until"]) == ("2026-10-24T00:00:00.000+02:00", "2026-10-27T00:00:00.000+01:00")
    assert days["items"] == [
        {"start": "2026-10-24T00:00:00.000+02:00", "count": 1},
        {"start": "2026-10-25T00:00:00.000+02:00", "count": 2},
        {"start": "2026-10-26T00:00:00.000+01:00", "count": 1},
    ]
    utc = series(api, interval="1d", since="2026-10-24", until="2026-10-27")
    assert utc["tz"] == "UTC"
    assert [(item["start"], item["count"]) for item in utc["items"]] == [  # type: ignore[attr-defined]
        ("2026-10-24T00:00:00.000Z", 2),
        ("2026-10-25T00:00:00.000Z", 2),
        ("2026-10-26T00:00:00.000Z", 0),
    ]


def test_hours_of_a_half_hour_zone_start_at_its_hours_and_lose_nothing(api: TestClient) -> None:
    # Kolkata is +05:30: its hours start at half past in UTC, and are counted by the half hour.
    hours = series(api, interval="1h", since="2026-10-24T21:00:00Z", until="2026-10-25T23:30:00Z", tz="Asia/Kolkata")
    items = hours["items"]
    assert isinstance(items, list)
    assert items[0]["start"] == "2026-10-25T02:00:00.000+05:30"  # 20:30 UTC, the hour holding since
    assert all(item["start"].endswith(":00:00.000+05:30") for item in items)
    assert sum(item["count"] for item in items) == 4  # the four around Berlin's change
    assert {item["start"]: item["count"] for item in items if item["count"]} == {
        "2026-10-25T03:00:00.000+05:30": 1,  # 21:59 UTC
        "2026-10-25T04:00:00.000+05:30": 1,  # 22:30 UTC
        "2026-10-26T04:00:00.000+05:30": 2,  # 22:59 and 23:00 UTC
    }


def test_a_zone_that_is_not_one_is_refused_naming_tz_and_utc_stays_as_it_was(api: TestClient) -> None:
    for bad in ("Mars/Olympus", "../../etc/passwd", "Europe/Berlin ", "europe/berlin"):
        response = api.get("/stats/timeseries", params={"tz": bad}, headers=AUTH)
        assert response.status_code == 422, bad
        assert response.json()["detail"].startswith("tz: "), response.json()
    for same in ("", "UTC"):
        answer = series(api, interval="1d", since="2026-10-24", until="2026-10-27", tz=same)
        assert answer["tz"] == "UTC" and answer["since"] == "2026-10-24T00:00:00.000Z"


def test_a_zone_window_too_long_to_count_is_refused_before_any_query(api: TestClient) -> None:
    # Counted by the half hour, 21 years of days in Kolkata would be 368,000 rows from the store.
    response = api.get(
        "/stats/timeseries", params={"interval": "1d", "since": "2005-01-01", "tz": "Asia/Kolkata"}, headers=AUTH
    )
    assert response.status_code == 422 and "days at most" in response.json()["detail"]
    too_many = api.get(
        "/stats/timeseries", params={"interval": "1m", "since": "2026-01-01", "tz": "Europe/Berlin"}, headers=AUTH
    )
    assert too_many.status_code == 422 and "buckets" in too_many.json()["detail"]


def test_the_first_day_of_1970_east_of_utc_is_a_window_start_like_any(api: TestClient) -> None:
    # Tokyo's 1970-01-01 begins 9 hours before the epoch: "outside 1970 to 2286", it said.
    days = series(api, interval="1d", since="1970-01-01", until="1970-01-03", tz="Asia/Tokyo")
    assert [item["start"] for item in days["items"]] == [  # type: ignore[attr-defined]
        "1970-01-01T00:00:00.000+09:00",
        "1970-01-02T00:00:00.000+09:00",
    ]


def test_an_event_just_after_a_jump_off_the_hour_is_counted_in_the_bucket_starting_at_the_jump(
    api: TestClient,
) -> None:
    # The hour holding 03:50 began at 03:00 on paper, a time the clocks skipped: its bucket started after
    # the event, which the answer left out.
    hours = series(api, interval="1h", since="2026-09-27T03:50", until="2026-09-27T05:00", tz="Pacific/Chatham")
    assert hours["items"] == [
        {"start": "2026-09-27T03:45:00.000+13:45", "count": 1},
        {"start": "2026-09-27T04:00:00.000+13:45", "count": 0},
    ]
