"""`/stats/breakdown` on the real engine, read as a read-only user: every metric by every kind of field, checked
against what was published, with filters, limits, the default window, long keys and redelivered copies."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventpipe.producer.demo import demo_event
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import AS_PARTNER, AUTH, api_client, event, partner_client
from tests.support.shared import SharedStores

HOUR_MS = 3_600_000
# Every kind of metric, on the one numeric property demo traffic has.
METRICS = ["count", "users", *(f"{kind}:properties.amount" for kind in ("sum", "avg", "min", "max"))]
Body = dict[str, Any]


def published(now_ms: int) -> list[Body]:
    """Demo traffic over the last 20 hours, and what demo traffic lacks: no user, no country, odd amounts."""
    rng = random.Random(15)
    bodies: list[Body] = []
    for i in range(700):
        kind, body = demo_event(rng)
        body |= {"event_id": f"d{i}", "timestamp": now_ms - rng.randrange(20 * HOUR_MS)}
        if i % 11 == 0:
            del body["user_id"]
        if i % 13 == 0:
            del body["country"]
        if kind == "purchase" and i % 7 == 0:
            body["amount"] = str(body["amount"])  # a number as text: no metric's number
        bodies.append(body)
    return bodies


def stored(dsn: str) -> tuple[str, list[Body], int]:
    now_ms = time.time_ns() // 1_000_000
    bodies = published(now_ms)
    old = [{**body, "event_id": f"old-{body['event_id']}", "timestamp": now_ms - 30 * HOUR_MS} for body in bodies[:50]]
    client = connect(dsn)
    migrate(client)
    writer = Writer(client)
    rows = [event(f"events/{body['event_type']}", body, now_ms) for body in [*bodies, *old]]
    assert writer.insert_events(rows) == []
    assert writer.insert_events(rows[:200]) == []  # redelivered, unmerged: still one event each
    return dsn, bodies, now_ms


@pytest.fixture
def seeded(shared_stores: SharedStores) -> tuple[TestClient, list[Body], int]:
    """The API on a store of `published` (and copies of some of it) that this module's tests only read,
    the bodies, and when they were stored."""
    dsn, bodies, now_ms = shared_stores.get(stored)
    return api_client(dsn), bodies, now_ms


def key_of(body: Body, by: str) -> str | None:
    if by.startswith("properties."):
        value = body.get(by.removeprefix("properties."))
        return None if value is None else value if isinstance(value, str) else json.dumps(value)
    return body.get(by)


def numbers(bodies: list[Body], path: str) -> list[float]:
    values = (body.get(path) for body in bodies)
    return [value for value in values if isinstance(value, int | float) and not isinstance(value, bool)]


AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "avg": lambda values: sum(values) / len(values),
    "min": min,
    "max": max,
}


def expected(bodies: list[Body], by: str, metric: str) -> tuple[list[tuple[str | None, float]], float | None]:
    """The breakdown of `bodies` as the contract defines it: items sorted by value descending, then key."""

    def measure(group: list[Body]) -> float | None:
        if metric == "count":
            return len(group)
        if metric == "users":
            return len({body["user_id"] for body in group if body.get("user_id") is not None})
        kind, path = metric.split(":properties.")
        values = numbers(group, path)
        return AGGREGATE[kind](values) if values else None  # no numbers: the group is left out

    groups: dict[str | None, list[Body]] = {}
    for body in bodies:
        groups.setdefault(key_of(body, by), []).append(body)
    items = [(key, value) for key, group in groups.items() if (value := measure(group)) is not None]
    items.sort(key=lambda item: (-item[1], item[0] is None, item[0] or ""))
    whole = measure(bodies)
    # Over no numbers a sum is 0, and an average, a minimum or a maximum is none.
    return items, 0 if whole is None and metric.startswith("sum:") else whole


def breakdown(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get("/stats/breakdown", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def check(answer: dict[str, Any], items: list[tuple[str | None, float]], total: float | None) -> None:
    got = [(item["key"], item["value"]) for item in answer["items"]]
    assert [key for key, _ in got] == [key for key, _ in items]
    assert [value for _, value in got] == pytest.approx([value for _, value in items], rel=1e-9)
    assert answer["total"] == (None if total is None else pytest.approx(total, rel=1e-9))


@pytest.mark.parametrize("by", ["properties.country", "event_type", "user_id", "properties.device"])
@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_by_every_kind_of_field_matches_what_was_published(
    seeded: tuple[TestClient, list[Body], int], by: str, metric: str
) -> None:
    api, bodies, _now = seeded
    answer = breakdown(api, by=by, metric=metric, limit=1000)
    assert answer["by"] == by and answer["metric"] == metric and set(answer) == {"by", "metric", "items", "total"}
    check(answer, *expected(bodies, by, metric))


def test_filters_event_type_and_limit_select_what_is_broken_down(seeded: tuple[TestClient, list[Body], int]) -> None:
    api, bodies, _now = seeded
    french = [body for body in bodies if body["event_type"] == "purchase" and body.get("country") == "FR"]
    answer = breakdown(
        api,
        by="properties.browser",
        metric="sum:properties.amount",
        event_type="purchase",
        where="properties.country=FR",
    )
    check(answer, *expected(french, "properties.browser", "sum:properties.amount"))
    big = [
        body for body in bodies if numbers([body], "amount") and body["amount"] >= 100 and body["device"] != "mobile"
    ]
    answer = breakdown(
        api, by="properties.country", where=["properties.amount>=100", "properties.device!=mobile"], limit=3
    )
    items, total = expected(big, "properties.country", "count")
    check(answer, items[:3], total)
    assert len(items) > 3  # the total is over every matching event, not over the items shown


@pytest.mark.parametrize("metric", METRICS)
def test_a_metric_over_nothing_is_0_to_count_and_add_up_and_none_to_average_or_bound(
    seeded: tuple[TestClient, list[Body], int], metric: str
) -> None:
    # A minimum of 0 over an empty day, or over a type without the property, charted as a real 0.
    api, bodies, now_ms = seeded
    none = 0 if metric in ("count", "users", "sum:properties.amount") else None
    empty = breakdown(api, by="properties.country", metric=metric, until=now_ms - 40 * HOUR_MS)
    assert (empty["items"], empty["total"]) == ([], none)
    clicks = [body for body in bodies if body["event_type"] == "click"]
    assert clicks and not numbers(clicks, "amount"), "clicks carry no amount"
    answer = breakdown(api, by="properties.country", metric=metric, event_type="click")
    check(answer, *expected(clicks, "properties.country", metric))
    if ":" in metric:
        assert (answer["items"], answer["total"]) == ([], none)


def test_the_window_is_the_last_day_unless_given(seeded: tuple[TestClient, list[Body], int]) -> None:
    api, bodies, now_ms = seeded
    assert breakdown(api, by="event_type")["total"] == len(bodies)
    assert breakdown(api, by="event_type", since=now_ms - 48 * HOUR_MS)["total"] == len(bodies) + 50
    assert breakdown(api, by="event_type", until=now_ms - 25 * HOUR_MS)["total"] == 50  # the day before until
    assert breakdown(api, by="event_type", since=now_ms - 48 * HOUR_MS, until=now_ms - 25 * HOUR_MS)["total"] == 50


def test_keys_of_every_json_kind_long_keys_cut_and_ties_sorted_by_key(clickhouse_dsn: str) -> None:
    now_ms = time.time_ns() // 1_000_000
    long_a, long_b = "é" * 200 + "a", "é" * 200 + "b"  # differ after 200 characters: one key
    values: list[Any] = [
        42.5,
        100.0,
        100,
        7,
        "7",
        True,
        None,
        {"b": 1},
        [1, "x"],
        long_a,
        long_b,
        "zz",
        "a",
        "b",
        'say "hi"',
        "a\\b",
    ]
    client = connect(clickhouse_dsn)
    migrate(client)
    rows = [
        event("events/k", {"event_id": f"k{i}", "timestamp": now_ms - i, "v": v}, now_ms) for i, v in enumerate(values)
    ]
    rows.append(event("events/k", {"event_id": "k-none", "timestamp": now_ms - 99}, now_ms))
    assert Writer(client).insert_events(rows) == []
    api = api_client(clickhouse_dsn)
    answer = breakdown(api, by="properties.v")
    assert answer["items"] == [
        {"key": "100", "value": 2},  # 100 and 100.0: one number
        {"key": "7", "value": 2},  # the number 7 and the string "7": one text
        {"key": "é" * 200, "value": 2},
        {"key": None, "value": 2},  # a JSON null and a missing property; null sorts after every key
        {"key": "42.5", "value": 1},
        {"key": '[1,"x"]', "value": 1},
        {"key": "a", "value": 1},
        {"key": "a\\b", "value": 1},
        {"key": "b", "value": 1},
        {"key": 'say "hi"', "value": 1},
        {"key": "true", "value": 1},
        {"key": "zz", "value": 1},
        {"key": '{"b":1}', "value": 1},
    ]
    assert answer["total"] == len(rows)
    assert breakdown(api, by="properties.v", limit=1)["items"] == [{"key": "100", "value": 2}]
    # Averages of no number at all leave nothing to show, and no total (null, not a real-looking 0).
    assert breakdown(api, by="topic", metric="avg:properties.nothing") == {
        "by": "topic",
        "metric": "avg:properties.nothing",
        "items": [],
        "total": None,
    }


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "by: Field required"),
        ({"by": "country"}, "by: unknown field 'country'"),
        ({"by": "properties"}, "by: properties needs a path"),
        ({"by": "event_type", "metric": "median:properties.amount"}, "metric: unknown metric"),
        ({"by": "event_type", "metric": "sum:user_id"}, "metric: sum adds up numbers"),
        ({"by": "event_type", "metric": "sum"}, "metric: unknown metric 'sum'"),
        ({"by": "event_type", "limit": 0}, "limit"),
        ({"by": "event_type", "limit": 1001}, "limit"),
        ({"by": "event_type", "since": "2026-03-02", "until": "2026-03-01"}, "since must be before until"),
        ({"by": "event_type", "since": "yesterday"}, "since:"),
        ({"by": "event_type", "where": "properties.a>b"}, "where: > needs a number"),
        ({"by": "event_type", "by2": "x"}, "unknown parameter 'by2'"),
        ({"by": ["event_type", "topic"]}, "by: given more than once"),
    ],
)
def test_bad_parameters_get_422_naming_the_problem(
    seeded: tuple[TestClient, list[Body], int], params: dict[str, Any], problem: str
) -> None:
    response = seeded[0].get("/stats/breakdown", params=params, headers=AUTH)
    assert response.status_code == 422, response.text
    assert problem in response.json()["detail"]


def test_openapi_documents_where_everywhere_and_the_breakdown_with_examples(clickhouse_dsn: str) -> None:
    document = api_client(clickhouse_dsn).get("/openapi.json").json()
    for path in ("/events", "/stats/event-types", "/stats/timeseries", "/stats/breakdown"):
        where = next(p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "where")
        assert where["schema"]["anyOf"][0]["type"] == "array", path
        assert where["examples"]["two"]["value"] == ["properties.amount>=100", "properties.country=FR"]
        assert "longest one wins" in where["description"] and "A missing property" in where["description"]
    breakdown_get = document["paths"]["/stats/breakdown"]["get"]
    parameters = {p["name"]: p for p in breakdown_get["parameters"]}
    assert set(parameters) == {"by", "metric", "event_type", "since", "until", "where", "limit"}
    assert parameters["by"]["required"] and parameters["by"]["schema"]["examples"]
    assert "first 200 characters" in parameters["by"]["description"]
    assert parameters["metric"]["schema"]["default"] == "count" and parameters["metric"]["schema"]["examples"]
    assert "Default: a day before until" in parameters["since"]["description"]
    assert (parameters["limit"]["schema"]["minimum"], parameters["limit"]["schema"]["maximum"]) == (1, 1000)
    answer = document["components"]["schemas"]["BreakdownAnswer"]
    assert answer["required"] == ["by", "metric", "items", "total"] and answer["examples"]
    assert "422" in breakdown_get["responses"] and "401" in breakdown_get["responses"]


def test_a_key_limited_to_some_types_breaks_down_those_only(clickhouse_dsn: str, tmp_path: Path) -> None:
    now_ms = time.time_ns() // 1_000_000
    client = connect(clickhouse_dsn)
    migrate(client)
    rows = [
        event(
            f"events/{kind}",
            {"event_id": f"{kind}-{i}", "timestamp": now_ms - i, "user_id": f"{kind}-u", "n": i},
            now_ms,
        )
        for kind in ("purchase", "secret")
        for i in range(10)
    ]
    assert Writer(client).insert_events(rows) == []
    api = partner_client(clickhouse_dsn, tmp_path / "keys.json", ["purchase"])
    as_partner = AS_PARTNER
    for by, metric in (("event_type", "count"), ("user_id", "users"), ("topic", "sum:properties.n")):
        for headers, types in ((as_partner, 1), (AUTH, 2)):
            answer = api.get("/stats/breakdown", params={"by": by, "metric": metric}, headers=headers).json()
            assert len(answer["items"]) == types, (by, answer)
            assert ("secret" in json.dumps(answer)) == (types == 2), (by, answer)
    answer = api.get("/stats/breakdown", params={"by": "event_type", "where": "properties.n>=5"}, headers=as_partner)
    assert answer.json()["items"] == [{"key": "purchase", "value": 5}] and answer.json()["total"] == 5


def test_a_breakdown_over_more_distinct_values_than_it_may_hold_goes_to_disk_and_stays_exact(
    clickhouse_dsn: str,
) -> None:
    # 300,000 values of 200 characters, all distinct but two: counted in memory, such a request took
    # hundreds of MB of the process (the embedded engine has no limit of its own), eight at once more.
    client = connect(clickhouse_dsn)
    migrate(client)
    now_ms = time.time_ns() // 1_000_000
    client.command(
        "INSERT INTO events (event_id, event_type, timestamp, received_at, user_id, topic, properties)"
        " SELECT concat('e', toString(number)), 'page_view', fromUnixTimestamp64Milli(toInt64({now:Int64} - number)),"
        " fromUnixTimestamp64Milli(toInt64({now:Int64} - number)), NULL, 'events/page_view',"
        " concat('{\"v\":\"', multiIf(number % 100 = 0, 'a', number % 100 = 1, 'b',"
        " leftPad(toString(number), 200, 'x')), '\"}') FROM numbers(300000)",
        parameters={"now": now_ms},
    )

    def spilled() -> int:
        found = client.query("SELECT sum(value) FROM system.events WHERE event = 'ExternalAggregationWritePart'")
        return int(found.result_rows[0][0])

    before = spilled()
    got = api_client(clickhouse_dsn).get("/stats/breakdown", params={"by": "properties.v", "limit": 3}, headers=AUTH)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["items"][:2] == [{"key": "a", "value": 3000}, {"key": "b", "value": 3000}], body["items"]
    assert body["items"][2]["value"] == 1 and body["total"] == 300_000, body
    assert spilled() > before, "the breakdown's counts were all held in memory"
