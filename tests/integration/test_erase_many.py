"""POST /admin/erasures: many users erased in one erasure, each answered and audited as one erasure of its own."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.store.audit import user_hash
from eventpipe.store.erasure import AT_ONCE
from eventpipe.store.writer import Writer
from tests.support.api import ADMIN, ADMIN_NAME, AUTH, ERASURE_SECRET, admin_client

MARCH_MS = 1_772_323_200_000
OWNED = {"u-1": 3, "u-2": 2, "42": 1, "u-10": 4}  # u-10 holds u-1: a substring match would take it too
# What each user's page shows: u-2's holds its copy of u-1/0 too.
SHOWN = {**OWNED, "u-2": 3}


def stored(body: dict[str, Any], i: int) -> Event:
    parsed = parse("events/t", json.dumps(body).encode(), MARCH_MS + i, Limits())
    assert isinstance(parsed, Event), parsed
    return parsed


@pytest.fixture
def api(clickhouse_dsn: str, writer: Writer) -> TestClient:
    for user, count in OWNED.items():
        # "42" sent as an integer, as events may carry it.
        given: object = int(user) if user.isdigit() else user
        writer.insert_events([stored({"event_id": f"{user}/{i}", "user_id": given}, i) for i in range(count)])
    # Re-sent under u-2: one event of two erased users, counted once, against the first asked for.
    writer.insert_events([stored({"event_id": "u-1/0", "user_id": "u-2"}, 50)])
    letter = parse("events/bad", b'{"user_id": "u-2", "timestamp": "x"}', MARCH_MS, Limits())
    assert isinstance(letter, Rejection)
    writer.insert_dead_letters([letter])
    return admin_client(clickhouse_dsn)


def users(api: TestClient) -> dict[str, int]:
    found = {}
    for user in OWNED:
        found[user] = len(api.get("/events", params={"user_id": user, "limit": 100}, headers=AUTH).json()["items"])
    return found


def test_many_users_go_in_one_call_each_answered_and_audited_as_their_own_erasure(api: TestClient) -> None:
    answer = api.post("/admin/erasures", json={"user_ids": ["u-1", 42, "u-2"]}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "items": [
            {"user_id": "u-1", "events": 3, "dead_letters": 0, "complete": True},
            {"user_id": "42", "events": 1, "dead_letters": 0, "complete": True},
            {"user_id": "u-2", "events": 2, "dead_letters": 1, "complete": True},
        ]
    }
    assert users(api) == {"u-1": 0, "u-2": 0, "42": 0, "u-10": 4}
    assert api.get("/dead-letters", headers=AUTH).json()["items"] == []
    audit = api.get("/admin/erasures", headers=ADMIN).json()["items"]
    assert sorted((record["user_hash"], record["events"]) for record in audit) == sorted(
        (user_hash(user, ERASURE_SECRET), n) for user, n in (("u-1", 3), ("42", 1), ("u-2", 2))
    )
    assert {record["key_name"] for record in audit} == {ADMIN_NAME}
    # Each user's own record, found by its id as for one erasure.
    one = api.get("/admin/erasures", params={"user_id": "u-2"}, headers=ADMIN).json()["items"]
    assert [(record["events"], record["dead_letters"]) for record in one] == [(2, 1)]


def test_many_users_log_one_line_at_the_start_and_one_at_the_end_naming_no_one(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Two lines a user made 2,000 lines of a call for 1,000 users.
    caplog.set_level(logging.INFO, logger="eventpipe")
    answer = api.post("/admin/erasures", json={"user_ids": ["u-1", 42, "u-2"]}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    logged = [record.getMessage() for record in caplog.records if record.name == "eventpipe.api.maintenance"]
    erased_at = {record["erased_at"] for record in api.get("/admin/erasures", headers=ADMIN).json()["items"]}
    assert len(erased_at) == 1
    assert logged == [
        f"erasure of 3 users started by key {ADMIN_NAME!r}",
        f"erasure of 3 users by key {ADMIN_NAME!r}, erased_at {erased_at.pop()}: 6 events, 1 dead letters, complete",
    ]
    # A user id is personal data; here not even its hash, which the audit keeps.
    for user in ("u-1", "u-2", user_hash("u-1", ERASURE_SECRET)[:12], user_hash("42", ERASURE_SECRET)[:12]):
        assert user not in caplog.text


def test_the_openapi_document_says_an_integer_id_is_256_digits_at_most_as_the_api_takes_it(api: TestClient) -> None:
    # An id is 256 characters at most, an integer as its decimal text: the document said any integer.
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    one = schemas["EraseRequest"]["properties"]["user_id"]["anyOf"]
    many = schemas["EraseManyRequest"]["properties"]["user_ids"]["items"]["anyOf"]
    (integer,) = [branch for branch in one if branch["type"] == "integer"]
    assert integer in many
    assert "At most 256 digits (255 with a minus sign)" in integer["description"]
    highest, lowest = 10**256 - 1, -(10**255 - 1)  # as the description says
    taken = api.post("/admin/erasures", json={"user_ids": [lowest, highest]}, headers=ADMIN)
    assert taken.status_code == 200, taken.text
    for beyond in (lowest - 1, highest + 1):
        refused = api.post("/admin/erasures", json={"user_ids": [beyond]}, headers=ADMIN)
        assert refused.status_code == 422, refused.text
        assert "at most 256 characters" in refused.json()["detail"], refused.text
    assert api.post("/admin/erase", json={"user_id": highest}, headers=ADMIN).status_code == 200
    assert api.post("/admin/erase", json={"user_id": highest + 1}, headers=ADMIN).status_code == 422
    assert users(api) == SHOWN


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"user_ids": []}, "user_ids: List should have at least 1 item"),
        ({"user_ids": ["u-1"] + [f"x{i}" for i in range(AT_ONCE)]}, f"at most {AT_ONCE} items"),
        ({"user_ids": ["u-1", "42", 42]}, "user_ids holds '42' twice"),
        ({"user_ids": ["u-1", "x" * 257]}, "user_ids[1]: String should have at most 256 characters"),
        ({"user_ids": ["u-1", 1.5]}, "user_ids[1]: Input should be a string or an integer"),
        ({"user_ids": "u-1"}, "user_ids: Input should be a valid list"),
        ({"user_id": "u-1"}, "user_ids: Field required"),
    ],
)
def test_a_bad_list_is_refused_with_what_to_send_and_erases_no_one(
    api: TestClient, body: dict[str, Any], said: str
) -> None:
    answer = api.post("/admin/erasures", json=body, headers=ADMIN)
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_parameter"), answer.text
    assert said in answer.json()["detail"], answer.text
    assert users(api) == SHOWN


def test_only_an_admin_key_erases_many(api: TestClient) -> None:
    assert api.post("/admin/erasures", json={"user_ids": ["u-1"]}, headers=AUTH).status_code == 403
    assert users(api) == SHOWN
