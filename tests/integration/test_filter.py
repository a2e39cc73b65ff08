"""Property filters (`where=`) on the real engine, read as a read-only user: every operator on every kind of
value, lists, pages and statistics, and filters that only ever see the copy of an event that FINAL keeps."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import AUTH, api_client, event, walk
from tests.support.shared import SharedStores

MARCH_MS = 1_772_323_200_000
HOUR_MS = 3_600_000
# One event per id, each property a kind of JSON value the grammar must tell apart.
PUBLISHED: dict[str, dict[str, Any]] = {
    "int": {"user_id": "u1", "amount": 100, "country": "FR", "ok": True, "cart": {"items": 3, "sku": "A-1"}},
    "text100": {"user_id": "u2", "amount": "100", "country": "DE", "ok": False},
    "float": {"amount": 42.5, "country": "FR", "ok": "true", "zip": "01234"},
    "exp": {"user_id": "u1", "amount": 1e2, "country": None, "ok": None},
    "neg": {"user_id": "u3", "amount": -7, "cart": {"items": 1}, "tags": ["FR"], "z": 0},
    "big": {"user_id": "u3", "amount": 9007199254740993, "country": {"code": "FR"}},
    "huge": {"user_id": "u4", "amount": 18446744073709551615, "country": "fr"},
    "none": {"note": "no amount, no country", "z": -0.0, "long": 123456789012345678901234567890, "e20": 1e20},
    "odd": {"user_id": "null", "amount": 0.1, "country": "' OR 1=1 --", "ok": "null", "q": "{limit:UInt32}"},
    "esc": {"note": 'say "hi" \\o/', "city": "Zürich", "tab": "a\tb", "slash": "a/b", "emoji": "💩"},
}
EVERY = sorted(PUBLISHED)


def published(dsn: str) -> str:
    client = connect(dsn)
    migrate(client)
    rows = [
        event(
            f"events/{'purchase' if i % 2 else 'view'}",
            {"event_id": name, "timestamp": MARCH_MS + i * 60_000, **body},
            MARCH_MS + i * 60_000,
        )
        for i, (name, body) in enumerate(PUBLISHED.items())
    ]
    assert Writer(client).insert_events(rows) == []
    return dsn


@pytest.fixture
def api(shared_stores: SharedStores) -> TestClient:
    """The API, on a store of PUBLISHED that this module's tests only read."""
    return api_client(shared_stores.get(published))


def listed(api: TestClient, *where: str, **params: Any) -> list[str]:
    return sorted(item["event_id"] for item in walk(api, "/events", where=list(where), limit=3, **params))


EXPECTED = [
    # = on numbers: the number under any spelling, and a string spelled the same.
    ("properties.amount=100", ["exp", "int", "text100"]),
    ("properties.amount=100.0", ["exp", "int"]),
    ("properties.amount=1e2", ["exp", "int"]),
    ("properties.amount=42.5", ["float"]),
    ("properties.amount=0.1", ["odd"]),
    ("properties.amount=-7", ["neg"]),
    ("properties.amount=9007199254740993", ["big"]),  # exact, not 2^53 as a double would have it
    ("properties.amount=9007199254740992", []),
    # Any spelling of that whole number is it, not the double it reads as (2^53, another value).
    ("properties.amount=9007199254740993.0", ["big"]),
    ("properties.amount=9.007199254740993e15", ["big"]),
    ("properties.amount=9007199254740992.0", []),
    ("properties.amount=18446744073709551615.0", ["huge"]),
    ("properties.amount=18446744073709551615", ["huge"]),
    ("properties.z=0", ["neg", "none"]),  # -0.0 equals 0
    ("properties.z=-0.0", ["neg", "none"]),
    ("properties.z!=0", [n for n in EVERY if n not in ("neg", "none")]),
    ("properties.long=123456789012345678901234567890", ["none"]),
    # Beyond 64 bits a whole number in a condition is also its double, as a property sent as 1e20 reads.
    ("properties.e20=100000000000000000000", ["none"]),
    ("properties.e20=1e20", ["none"]),
    ("properties.e20!=100000000000000000000", [n for n in EVERY if n != "none"]),
    # = on strings: exactly, case and leading zeros kept; JSON null and objects equal no string.
    ("properties.country=FR", ["float", "int"]),
    ("properties.country=fr", ["huge"]),
    ("properties.zip=01234", ["float"]),
    ("properties.zip=1234", []),
    ("properties.country=' OR 1=1 --", ["odd"]),
    ("properties.q={limit:UInt32}", ["odd"]),
    ('properties.country={"code":"FR"}', []),
    ("properties.tags=FR", []),
    # Strings that JSON escapes, or may: each compares as its decoded text.
    ('properties.note=say "hi" \\o/', ["esc"]),
    ('properties.note=say "hi" \\\\o/', []),  # the escaped spelling is not the string
    ("properties.city=Zürich", ["esc"]),
    ("properties.tab=a\tb", ["esc"]),
    ("properties.tab=a\\tb", []),
    ("properties.slash=a/b", ["esc"]),
    ("properties.emoji=💩", ["esc"]),
    # Booleans and null: the JSON value, or the string that spells it.
    ("properties.ok=true", ["float", "int"]),
    ("properties.ok=false", ["text100"]),
    ("properties.ok=null", ["exp", "odd"]),
    ("properties.country=null", ["exp"]),
    # != is exactly not =: a missing property is != anything.
    ("properties.amount!=100", ["big", "esc", "float", "huge", "neg", "none", "odd"]),
    ("properties.country!=FR", ["big", "esc", "exp", "huge", "neg", "none", "odd", "text100"]),
    ("properties.ok!=true", ["big", "esc", "exp", "huge", "neg", "none", "odd", "text100"]),
    ("properties.missing!=x", EVERY),
    ("properties.missing=x", []),
    ("properties.missing=", []),
    # Ordering compares JSON numbers only: never a string that looks like one, never a missing value.
    ("properties.amount>100", ["big", "huge"]),
    ("properties.amount>=100", ["big", "exp", "huge", "int"]),
    ("properties.amount<100", ["float", "neg", "odd"]),
    ("properties.amount<=0.1", ["neg", "odd"]),
    ("properties.amount>99.5", ["big", "exp", "huge", "int"]),
    ("properties.amount>9007199254740992", ["big", "huge"]),
    ("properties.amount<-1e300", []),
    ("properties.amount>-1e300", ["big", "exp", "float", "huge", "int", "neg", "odd"]),
    # Nested paths.
    ("properties.cart.items>=1", ["int", "neg"]),
    ("properties.cart.items=3", ["int"]),
    ("properties.cart.sku=A-1", ["int"]),
    ("properties.cart.items.x=3", []),
    # The event's own columns; a null user is != any user.
    ("event_type=purchase", ["big", "esc", "exp", "none", "text100"]),
    ("event_type!=purchase", ["float", "huge", "int", "neg", "odd"]),
    ("topic=events/view", ["float", "huge", "int", "neg", "odd"]),
    ("user_id=u1", ["exp", "int"]),
    ("user_id!=u1", ["big", "esc", "float", "huge", "neg", "none", "odd", "text100"]),
    ("user_id=null", ["odd"]),
    # Presence: the only filter for the events without a user; a JSON null property is present.
    ("missing:user_id", ["esc", "float", "none"]),
    ("exists:user_id", ["big", "exp", "huge", "int", "neg", "odd", "text100"]),
    ("exists:properties.country", ["big", "exp", "float", "huge", "int", "odd", "text100"]),
    ("missing:properties.country", ["esc", "neg", "none"]),
    ("exists:properties.cart.items", ["int", "neg"]),
    ("missing:properties.cart.items", [n for n in EVERY if n not in ("int", "neg")]),
    ("exists:properties.cart.items.x", []),  # a path through a number
    ("exists:properties.ok", ["exp", "float", "int", "odd", "text100"]),
]


@pytest.mark.parametrize(("where", "expected"), EXPECTED)
def test_each_operator_on_each_kind_of_value(api: TestClient, where: str, expected: list[str]) -> None:
    assert listed(api, where) == expected


def test_filters_are_and_ed_and_combine_with_the_other_parameters(api: TestClient) -> None:
    assert listed(api, "properties.amount>=100", "properties.country=FR") == ["int"]
    assert listed(api, "properties.amount>=100", "properties.country!=FR") == ["big", "exp", "huge"]
    assert listed(api, "properties.amount>=100", event_type="purchase") == ["big", "exp"]
    assert listed(api, "properties.country=FR", user_id="u1") == ["int"]
    assert listed(api, "properties.amount<100", since=MARCH_MS + 2 * 60_000, until=MARCH_MS + 5 * 60_000) == [
        "float",
        "neg",
    ]
    assert listed(api, "") == EVERY  # an empty where= is no filter, as for the other parameters
    # One user's events are read from the table of users' events, which holds none without a user.
    assert listed(api, "missing:user_id", user_id="u1") == []
    assert listed(api, "exists:user_id", "user_id=u1") == ["exp", "int"]
    assert listed(api, "missing:user_id", "missing:properties.amount") == ["esc", "none"]


def test_a_filtered_walk_serves_each_match_once_and_its_cursor_only_continues_its_own_filter(
    clickhouse_dsn: str,
) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    bodies = [{"event_id": f"w{i:04d}", "timestamp": MARCH_MS + i // 4, "n": i, "odd": i % 2 == 1} for i in range(900)]
    assert Writer(client).insert_events([event("events/t", body, MARCH_MS) for body in bodies]) == []
    api = api_client(clickhouse_dsn)
    for where in (["properties.odd=true"], ["properties.n>=450", "properties.odd!=true"]):
        items = list(walk(api, "/events", where=where, limit=37))
        keys = [(item["timestamp"], item["event_id"]) for item in items]
        assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
        if len(where) == 1:
            assert sorted(item["event_id"] for item in items) == [f"w{i:04d}" for i in range(1, 900, 2)]
        else:
            assert sorted(item["event_id"] for item in items) == [f"w{i:04d}" for i in range(450, 900, 2)]

    page = api.get("/events", params={"where": "properties.odd=true", "limit": 5}, headers=AUTH).json()
    other = api.get("/events", params={"where": "properties.odd=false", "cursor": page["next_cursor"]}, headers=AUTH)
    assert other.status_code == 422 and "other filters" in other.json()["detail"]


def test_statistics_with_a_filter_count_only_what_it_selects(api: TestClient) -> None:
    window = {"since": MARCH_MS, "until": MARCH_MS + HOUR_MS}
    # Unfiltered first, so the tally holds these hours: a filtered count must not come from it.
    assert api.get("/stats/event-types", params=window, headers=AUTH).json()["total"] == len(EVERY)
    hourly = {"interval": "1h", **window}
    assert api.get("/stats/timeseries", params=hourly, headers=AUTH).json()["items"][0]["count"] == len(EVERY)

    types = api.get("/stats/event-types", params={**window, "where": "properties.amount>=100"}, headers=AUTH).json()
    assert types == {
        "items": [{"event_type": "purchase", "count": 2}, {"event_type": "view", "count": 2}],
        "total": 4,
        "types": 2,
    }
    all_time = api.get("/stats/event-types", params={"where": ["properties.country=FR"]}, headers=AUTH).json()
    assert all_time["total"] == 2
    anonymous = api.get("/stats/event-types", params={"where": "missing:user_id"}, headers=AUTH).json()
    assert anonymous == {
        "items": [{"event_type": "purchase", "count": 2}, {"event_type": "view", "count": 1}],
        "total": 3,
        "types": 2,
    }
    series = api.get(
        "/stats/timeseries",
        params={**hourly, "where": ["properties.amount>=100", "event_type=view"]},
        headers=AUTH,
    ).json()
    assert [bucket["count"] for bucket in series["items"]] == [2]
    minutes = api.get(
        "/stats/timeseries",
        params={"interval": "5m", "since": MARCH_MS, "until": MARCH_MS + 10 * 60_000, "where": "user_id=u3"},
        headers=AUTH,
    ).json()
    assert [bucket["count"] for bucket in minutes["items"]] == [1, 1]  # neg at minute 4, big at minute 5


def test_a_filter_never_picks_out_a_stale_copy(clickhouse_dsn: str) -> None:
    """A producer re-sent an event under the same id with other properties, unmerged: the first copy is the
    event. A filter applied before FINAL would find the second copy and serve it (or count it)."""
    client = connect(clickhouse_dsn)
    migrate(client)
    writer = Writer(client)
    body = {"event_id": "resent", "timestamp": MARCH_MS, "user_id": "u1"}
    writer.insert_events([event("events/purchase", {**body, "country": "FR", "amount": 10}, MARCH_MS)])
    writer.insert_events([event("events/purchase", {**body, "country": "DE", "amount": 500}, MARCH_MS + 5)])
    api = api_client(clickhouse_dsn)
    window = {"since": MARCH_MS, "until": MARCH_MS + HOUR_MS}

    for where in ("properties.country=DE", "properties.amount>100", "properties.country!=FR"):
        for params in ({}, {"user_id": "u1"}):
            assert list(walk(api, "/events", where=[where], **params)) == []
        counts = api.get("/stats/event-types", params={**window, "where": where}, headers=AUTH).json()
        assert counts["total"] == 0, where
    [kept] = list(walk(api, "/events", where=["properties.country=FR"]))
    assert kept["properties"] == {"country": "FR", "amount": 10}
    by_country = api.get(
        "/stats/breakdown",
        params={**window, "by": "properties.country", "metric": "sum:properties.amount"},
        headers=AUTH,
    ).json()
    assert by_country["items"] == [{"key": "FR", "value": 10}] and by_country["total"] == 10


def test_a_user_filter_in_where_reads_that_users_events_as_user_id_does(api: TestClient) -> None:
    assert listed(api, "user_id=u3") == listed(api, user_id="u3") == ["big", "neg"]
    assert listed(api, "user_id=u3", "user_id=u1") == []
    assert listed(api, "user_id=u3", user_id="u1") == []


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("country=FR", "where: unknown field 'country'"),
        ("properties.amount>abc", "where: > needs a number, got 'abc'"),
        ("user_id>5", "user_id is text"),
        ("properties.a.b.c.d.e.f.g.h.i=1", "9 deep"),
        ("properties.a'b=1", 'path segment "a\'b"'),
        ("properties.amount", "has no operator"),
        ("properties.x=" + "y" * 2000, "longer than 1024 characters"),
        ("properties.z=1e-400", "too small to tell from 0"),  # it matched every zero
    ],
)
def test_a_malformed_filter_gets_422_naming_the_problem_on_every_route(
    api: TestClient, where: str, problem: str
) -> None:
    for path, params in (
        ("/events", {}),
        ("/stats/event-types", {}),
        ("/stats/timeseries", {}),
        ("/stats/breakdown", {"by": "event_type"}),
    ):
        response = api.get(path, params={**params, "where": where}, headers=AUTH)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "invalid_parameter"
        assert problem in response.json()["detail"], (path, response.json())
        assert len(response.content) < 500


def test_a_body_is_refused_where_none_is_read_unless_it_asks_for_nothing(api: TestClient) -> None:
    # A filter sent as JSON would otherwise be ignored and the client served everything.
    asked = api.request("GET", "/events", json={"event_type": "purchase"}, headers=AUTH)
    assert asked.status_code == 422 and asked.json()["detail"] == "this endpoint takes no body", asked.text
    # What clients send for "no options": `json={}`, `null`, a chunked stream of no bytes.
    for empty in ({"json": {}}, {"content": b"null"}, {"content": iter([b""])}, {"content": b" \n"}):
        assert api.request("GET", "/events", headers=AUTH, **empty).status_code == 200, empty


def test_a_garbled_percent_encoding_is_refused_not_read_as_something_else(api: TestClient) -> None:
    # `%ZZ` was kept as written and `%FF` read as U+FFFD: both answered 200 with nothing, hiding the client's bug.
    for query in ("event_type=%ZZ", "event_type=%FF", "event_type=view%", "where=properties.country%3D%C3"):
        refused = api.get(f"/events?{query}", headers=AUTH)
        assert refused.status_code == 422 and refused.json()["error"] == "invalid_parameter", (query, refused.text)
        assert any(hint in refused.json()["detail"] for hint in ("%25", "UTF-8")), refused.text
    for query in ("event_type=a%25b", "where=properties.country%3D%C3%A9", "event_type=a+b", "event_type=%2B"):
        assert api.get(f"/events?{query}", headers=AUTH).status_code == 200, query


def test_where_may_repeat_but_no_other_parameter_may(api: TestClient) -> None:
    many = [f"properties.amount!={i}" for i in range(20)]
    assert api.get("/events", params={"where": many}, headers=AUTH).status_code == 200
    too_many = api.get("/events", params={"where": [*many, "properties.x=1"]}, headers=AUTH)
    assert too_many.status_code == 422 and "where" in too_many.json()["detail"]
    twice = api.get("/events", params={"event_type": ["view", "purchase"], "where": many[:2]}, headers=AUTH)
    assert twice.status_code == 422 and twice.json()["detail"] == "event_type: given more than once"
    # Every such problem in one answer, five at most: one at a time, a client fixes and asks again per name.
    mixed = api.get("/events", params={"evnt_type": "a", "usr": "b", "limit": ["1", "2"]}, headers=AUTH)
    detail = mixed.json()["detail"]
    assert mixed.status_code == 422 and detail.startswith(
        "unknown parameter 'evnt_type'; unknown parameter 'usr'; limit: given more than once; this endpoint takes "
    ), detail
    many = api.get("/events", params={f"x{i}": "1" for i in range(9)}, headers=AUTH).json()["detail"]
    assert many.count("unknown parameter") == 5 and len(many) < 500, many
