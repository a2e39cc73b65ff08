"""Erasure by user over the real engine: every read forgets the user at once, other users keep everything."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from eventpipe.api.body import MAX_BODY_BYTES
from eventpipe.api.model import rfc3339
from eventpipe.errors import BackupError, StorageError
from eventpipe.events import Event, Limits, Rejection, parse
from eventpipe.ingest import replay
from eventpipe.ingest.mark import Marker
from eventpipe.store import erasure, mark, turn
from eventpipe.store.audit import Audit, Erasure, user_hash
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.concealment import hide
from eventpipe.store.erasure import Erased, Eraser
from eventpipe.store.mark import REPLAY_AHEAD
from eventpipe.store.mention import mentions
from eventpipe.store.migration import migrate
from eventpipe.store.redo import Redone, redo_erasures
from eventpipe.store.restoration import unfinished_restore
from eventpipe.store.schema.version import REFILLED
from eventpipe.store.writer import Mark, Writer
from tests.support.api import ADMIN, ADMIN_NAME, AUTH, ERASURE_SECRET, admin_client, walk
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.wait import wait_until

MARCH_MS = 1_772_323_200_000  # 2026-03-01: the events straddle the month boundary
HOUR_MS = 3_600_000
ERASED, KEPT = "user-é1", "user-é10"  # the kept id holds the erased one: a substring match would take it too


def event(i: int, user: str, dated: bool) -> Event:
    body: dict[str, Any] = {"event_id": f"{user}/{i}", "user_id": user, "n": i}
    if dated:
        body["timestamp"] = MARCH_MS + (i - 20) * HOUR_MS
    parsed = parse(f"events/t{i % 3}", json.dumps(body).encode(), MARCH_MS + i * 1000, Limits())
    assert isinstance(parsed, Event), parsed
    return parsed


def dead_letter(payload: bytes, i: int) -> Rejection:
    parsed = parse("events/bad", payload, MARCH_MS + i, Limits())
    assert isinstance(parsed, Rejection), parsed
    return parsed


# Dead letters that name the erased user: raw, JSON-escaped, beside invalid bytes, in text that is no JSON.
NAMING = [
    json.dumps({"user_id": ERASED, "timestamp": "yesterday"}, ensure_ascii=False).encode(),
    json.dumps({"user_id": ERASED, "timestamp": "yesterday"}).encode(),  # \u00e9
    json.dumps({"user_id": ERASED, "timestamp": "yesterday"}).replace("\\u00e9", "\\u00E9").encode(),  # upper-case hex
    b"\xff\xfe" + ERASED.encode() + b"\xff",
    f"user {ERASED}, not json".encode(),
    # Any other escape JSON allows: Gson writes `=`, `'`, `<`, `>`, `&` as \u003d and the like; any
    # character may be \u-escaped, in either case.
    b'{"user_id":"user\\u002d\\u00e91","timestamp":"yesterday"}',
    ('{"user_id":"' + "".join(f"\\u{ord(c):04X}" for c in ERASED) + '","timestamp":"yesterday"}').encode(),
]
# Dead letters of the other user only, among them one holding the erased id inside a longer one.
OTHERS = [
    json.dumps({"user_id": KEPT, "timestamp": "yesterday"}, ensure_ascii=False).encode(),
    f"{KEPT}x{ERASED}z".encode(),
    b"[1, 2, 3]",
    ('{"user_id":"' + "".join(f"\\u{ord(c):04x}" for c in ERASED + "0") + '","timestamp":"yesterday"}').encode(),
    # Other users whose ids start with the erased one: in JSON, a whole string must equal it.
    *(
        json.dumps({"user_id": ERASED + tail, "timestamp": "x"}).encode()
        for tail in (".smith", "@example.com", "+1", "/x", "é")
    ),
]


@pytest.fixture
def api(clickhouse_dsn: str) -> TestClient:
    client = connect(clickhouse_dsn)
    migrate(client)
    writer = Writer(client)
    for user in (ERASED, KEPT):
        writer.insert_events([event(i, user, dated=i % 4 != 0) for i in range(40)])
    writer.insert_events([event(i, ERASED, dated=i % 4 != 0) for i in range(10)])  # redelivered copies
    writer.insert_dead_letters([dead_letter(payload, i) for i, payload in enumerate(NAMING + OTHERS)])
    return admin_client(clickhouse_dsn)


def reads(api: TestClient) -> dict[str, Any]:
    """What a client sees: every list, count and series it can ask for."""
    get = api.get
    # A window the tally counts by the hour (a month at most), as well as all time by the day.
    window = {"since": MARCH_MS - 86_400_000, "until": MARCH_MS + 2 * 86_400_000}
    series = get("/stats/timeseries", params={"interval": "1h", **window}, headers=AUTH)
    return {
        "events": sorted(item["event_id"] for item in walk(api, "/events", limit=7)),
        "users": {user: len(list(walk(api, "/events", user_id=user))) for user in (ERASED, KEPT)},
        "total": get("/stats/event-types", headers=AUTH).json()["total"],
        "window": get("/stats/event-types", params=window, headers=AUTH).json()["total"],
        "series": sum(bucket["count"] for bucket in series.json()["items"]),
        "dead_letters": sorted(item["payload"] for item in walk(api, "/dead-letters")),
        "breakdown": get("/stats/breakdown", params={"by": "user_id", **window}, headers=AUTH).json()["items"],
        "export": sorted(json.loads(line)["event_id"] for line in get("/export", headers=AUTH).text.splitlines()),
        "feed": sorted(item["event_id"] for item in feed(api)),
    }


def feed(api: TestClient) -> list[dict[str, Any]]:
    """Every item of the arrival feed, from the beginning until a page comes back empty (a page of
    the first epoch can come back short with more to follow)."""
    items: list[dict[str, Any]] = []
    after: dict[str, str] = {}
    for _ in range(100):
        page = api.get("/feed", params={"limit": 25, **after}, headers=AUTH).json()
        items += page["items"]
        after = {"after": page["next"]}
        if not page["items"]:
            return items
    raise AssertionError("the feed did not come to an end")


def test_an_erased_user_is_gone_from_every_read_and_the_others_stay(api: TestClient, clickhouse_dsn: str) -> None:
    before = reads(api)  # the tally keeps its counts now: the erasure must make it count again
    assert before["users"] == {ERASED: 40, KEPT: 40} and before["total"] == 80
    assert before["events"] == before["export"] == before["feed"] and len(before["feed"]) == 80
    erased_ids = [f"{ERASED}/{i}" for i in range(40)]
    assert api.get(f"/events/{erased_ids[0]}", headers=AUTH).status_code == 200

    response = api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"events": 40, "dead_letters": len(NAMING), "complete": True}

    after = reads(api)
    assert after["users"] == {ERASED: 0, KEPT: 40}
    assert after["events"] == after["export"] == after["feed"] == sorted(f"{KEPT}/{i}" for i in range(40))
    assert {item["key"] for item in before["breakdown"]} == {ERASED, KEPT}
    assert [(item["key"], item["value"]) for item in after["breakdown"]] == [(KEPT, 40)]
    assert (after["total"], after["window"], after["series"]) == (40, before["window"] - 40, before["series"] - 40)
    assert len(after["dead_letters"]) == len(OTHERS)
    assert not any(ERASED in payload and KEPT not in payload for payload in after["dead_letters"])
    for event_id in erased_ids:
        assert api.get(f"/events/{event_id}", headers=AUTH).status_code == 404
    # Nor in the indexes reads go through, which hold no user column. (The id projection keeps the
    # ids and offsets until a merge, operations.md: the 404s above are the lookups through it.)
    client = connect(clickhouse_dsn)
    for table in ("events", "events_by_user", "undated_events"):
        # FINAL, as pages are: without it ClickHouse may answer from events' id projection, which keeps erased ids.
        sql = f"SELECT count() FROM {table} FINAL WHERE startsWith(event_id, {{prefix:String}})"  # noqa: S608 - constants
        left = client.query(sql, parameters={"prefix": ERASED + "/"})
        assert left.result_rows[0][0] == 0, table

    records = api.get("/admin/erasures", headers=ADMIN).json()["items"]
    assert len(records) == 1
    record = records[0]
    assert (record["key_name"], record["events"], record["dead_letters"]) == (ADMIN_NAME, 40, len(NAMING))
    assert record["complete"] is True
    assert record["user_hash"] == user_hash(ERASED, ERASURE_SECRET) != user_hash(ERASED, "another secret" * 3)
    assert ERASED not in json.dumps(records, ensure_ascii=False)
    found = api.get("/admin/erasures", params={"user_id": ERASED}, headers=ADMIN).json()["items"]
    assert [item["erasure_id"] for item in found] == [record["erasure_id"]]
    assert api.get("/admin/erasures", params={"user_id": KEPT}, headers=ADMIN).json()["items"] == []

    # Again: nothing left to erase, and a second record says so.
    again = api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).json()
    assert again == {"events": 0, "dead_letters": 0, "complete": True}
    assert len(list(walk(api, "/admin/erasures", headers=ADMIN, limit=1))) == 2
    assert reads(api) == after


def test_an_erasure_a_silent_worker_could_outrun_says_it_may_be_incomplete(
    api: TestClient, clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker that stopped without retiring: its mark stays behind the erasure's start, so a batch it
    # held could still be stored. The answer said nothing of it: 200 and counts, as for a whole erasure.
    monkeypatch.setattr(erasure, "SETTLE_S", 0.5)
    caplog.set_level(logging.INFO, logger="eventpipe")
    writer = Writer(connect(clickhouse_dsn))
    writer.insert_marks([Marker("gone").start()])
    answer = api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    assert answer.status_code == 200
    assert answer.json() == {"events": 40, "dead_letters": len(NAMING), "complete": False}
    assert "erase again once every worker is back" in caplog.text
    # Its start is logged before anything is deleted, so one cut short shows as a start without an end.
    started = [record.getMessage() for record in caplog.records if "erasure started by key" in record.getMessage()]
    assert started == [f"erasure started by key {ADMIN_NAME!r}: user hash {user_hash(ERASED, ERASURE_SECRET)[:12]}..."]
    assert ERASED not in caplog.text
    writer.insert_marks([Marker("gone").retired()])  # it came back and stopped cleanly
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).json()["complete"] is True
    # The audit, which an operator shows, says which of the two was whole (it said nothing of it).
    audit = api.get("/admin/erasures", headers=ADMIN).json()["items"]
    assert [(item["events"], item["complete"]) for item in audit] == [(0, True), (40, False)]


def test_only_an_admin_key_may_erase_or_read_the_audit(api: TestClient) -> None:
    for method, path, body in (
        ("POST", "/admin/erase", {"user_id": ERASED}),
        ("GET", "/admin/erasures", None),
    ):
        refused = api.request(method, path, json=body, headers=AUTH)
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), path
        assert api.request(method, path, json=body).status_code == 401
        # Before the parameters are checked: a key that is no admin key learnt which ones the route takes.
        probing = api.request(method, path, params={"foo": "1", "limit": "x"}, json=body, headers=AUTH)
        assert (probing.status_code, probing.json()["error"]) == (403, "forbidden"), path
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


def test_a_body_over_the_bound_is_refused_with_413_before_it_is_parsed_with_or_without_a_key(api: TestClient) -> None:
    # Parsed before the key check, 300 MB cost the process a gigabyte of memory for a 401 (an attack).
    padded = json.dumps({"user_id": ERASED, "pad": "x" * MAX_BODY_BYTES}).encode()
    for headers in ({}, ADMIN):
        # With no length announced (chunked), the body is cut once past the bound.
        refused = api.post("/admin/erase", content=iter([padded[:1000], padded[1000:]]), headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (413, "payload_too_large"), refused.text
    # One byte under the bound is read and parsed (a 422 here, as the cut leaves no JSON).
    assert api.post("/admin/erase", content=padded[: MAX_BODY_BYTES - 1], headers=ADMIN).status_code == 422
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


@pytest.mark.parametrize(
    "body", [{}, {"user_id": ""}, {"user_id": "x" * 257}, {"user_id": True}, {"user_id": 5.0}, {"user": "a"}]
)
def test_a_bad_erasure_request_is_refused_and_erases_nothing(api: TestClient, body: dict[str, Any]) -> None:
    response = api.post("/admin/erase", json=body, headers=ADMIN)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_parameter"), response.text
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


@pytest.mark.parametrize(
    "body",
    [b"\xff", b'{"user_id": ' + b"1" * 5000 + b"}", b"[" * 100_000],
    ids=["not-utf-8", "an-integer-of-5000-digits", "nested-100000-deep"],
)
def test_a_body_json_cannot_take_is_the_422_of_a_body_that_is_not_json_before_the_key(
    api: TestClient, body: bytes
) -> None:
    # They got FastAPI's 400 "There was an error parsing the body" (an attack), which README gives to
    # requests that are not HTTP; before the key is checked, as every 422 of a body that is not JSON.
    for headers in (ADMIN, AUTH):
        response = api.post("/admin/erase", content=body, headers={**headers, "Content-Type": "application/json"})
        assert (response.status_code, response.json()["error"]) == (422, "invalid_parameter"), response.text
        assert "the body is not JSON" in response.json()["detail"]
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        # curl -d without -H sends form encoding: FastAPI said "Input should be a valid dictionary or object".
        (b'{"user_id": "a"}', None, "a JSON object, sent with the header 'Content-Type: application/json'"),
        (b'{"user_id": "a"}', "text/plain", "sent with the header 'Content-Type: application/json'"),
        (b"[1]", "application/json", "the body must be a JSON object, not an array"),
        (b"notjson", "application/json", "the body is not JSON (Expecting value, at character 0)"),  # "body[0]"
        (b'{"user_id": 1.5}', "application/json", "user_id: Input should be a string or an integer"),
        (b'{"user_id": true}', "application/json", "user_id: Input should be a string or an integer"),
    ],
)
def test_a_body_that_cannot_be_an_erasure_says_what_to_send(
    api: TestClient, body: bytes, content_type: str | None, said: str
) -> None:
    headers = ADMIN if content_type is None else {**ADMIN, "Content-Type": content_type}
    response = api.post("/admin/erase", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_parameter"), response.text
    assert said in response.json()["detail"], response.text
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


def test_a_user_id_given_twice_is_refused_and_erases_neither(api: TestClient) -> None:
    # JSON keeps the last of two: the user erased was the second, whoever checked the first.
    body = f'{{"user_id": "{KEPT}", "user_id": "{ERASED}"}}'.encode()
    response = api.post("/admin/erase", content=body, headers={**ADMIN, "Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (
        422,
        {"error": "invalid_parameter", "detail": "user_id: given more than once"},
    ), response.text
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


def test_a_user_id_given_as_an_integer_erases_the_events_that_gave_it_as_one(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # Events take an integer user_id (stored as its decimal text); the erasure refused one with 422.
    numbered = [parse("events/t", json.dumps({"event_id": "n1", "user_id": 42}).encode(), MARCH_MS, Limits())]
    Writer(connect(clickhouse_dsn)).insert_events([item for item in numbered if isinstance(item, Event)])
    answer = api.post("/admin/erase", json={"user_id": 42}, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["events"] == 1, answer.text
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}


def test_an_erasure_during_a_migrations_copy_is_answered_busy_and_erases_nothing(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # Migration 16's copy of events_by_user, as it stands while the rows are copied: the erasure would
    # delete rows the copy may already hold, so it refuses, and says why and when to come back.
    client = connect(clickhouse_dsn)
    client.command(f"CREATE TABLE events_by_user{REFILLED} AS events_by_user")
    response = api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    assert (response.status_code, response.json()["error"]) == (503, "busy"), response.text
    detail = f"a migration is copying events_by_user{REFILLED}: erase again once it has finished"
    assert response.json()["detail"] == detail
    assert response.headers["retry-after"] == "30"
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}
    assert api.get("/admin/erasures", headers=ADMIN).json()["items"] == []
    client.command(f"DROP TABLE events_by_user{REFILLED}")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    assert reads(api)["users"] == {ERASED: 0, KEPT: 40}


def test_erasures_while_a_worker_stores_a_stream_finish_and_lose_nothing_of_it(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str
) -> None:
    migrate(connect(clickhouse_dsn))
    api = admin_client(clickhouse_dsn)
    stream = [
        (f"events/t{i % 3}", json.dumps({"event_id": f"s-{i}", "user_id": KEPT if i % 4 else ERASED}).encode())
        for i in range(3000)
    ]
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        assert publish_raw(broker.url, stream[:1000]) == 1000
        wait_until(lambda: run.reader.count_events() == 1000, what="the first 1000 events")
        publisher = threading.Thread(target=publish_raw, args=(broker.url, stream[1000:]))
        publisher.start()
        answers = [api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN) for _ in range(3)]
        publisher.join()
        wait_until(lambda: run.metric("eventpipe_events_stored_total") == 3000, what="the whole stream stored")
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[0].json()["events"] >= 250  # the erased user's first 1000, and what arrived before the delete
    # Each event of the user that a batch committed during an erasure is whole or gone, in every table alike.
    client = connect(clickhouse_dsn)
    held = {table: ids_of(client, table) for table in ("events", "events_by_user", "arrivals")}
    assert held["events"] == held["events_by_user"] == held["arrivals"]
    # Erased once more now that nothing is on its way: every event of the user is gone, none of the other's.
    api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    assert reads(api)["users"] == {ERASED: 0, KEPT: 2250}


def test_the_audit_outlives_a_restore_that_brings_an_erased_user_back(api: TestClient, clickhouse_dsn: str) -> None:
    backups = Backups(connect(clickhouse_dsn))
    before = backups.take("test")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    # The restore counts the erasures since the backup, which `eventpipe restore` tells the operator to redo.
    assert backups.restore(before.name, 0, "test").erased_since == 1
    # The backup's rows are back (operations.md: erase again after a restore), and the audit says who to erase.
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}
    audit = api.get("/admin/erasures", params={"user_id": ERASED}, headers=ADMIN).json()["items"]
    assert len(audit) == 1 and audit[0]["erased_at"] > rfc3339(before.taken_ms)
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).json()["events"] == 40
    assert reads(api)["users"] == {ERASED: 0, KEPT: 40}
    time.sleep(1.1)  # past the second the erasure's: a backup's name gives its time to the second
    after = backups.take("test")
    assert backups.restore(after.name, 0, "test").erased_since == 0
    assert reads(api)["users"] == {ERASED: 0, KEPT: 40}


def redoing(client: Client, name: str, secret: str = ERASURE_SECRET) -> Callable[[int], Redone]:
    """A restore's redo of backup `name`, as `eventpipe restore` wires it (cli.restore)."""
    eraser = Eraser(client, embedded=True)
    return lambda first: redo_erasures(client, name, secret, eraser, "eventpipe restore", first)


def test_a_restore_erases_again_whom_the_audit_names_since_the_backup_and_no_one_else(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # The audit keeps only keyed hashes: the restore finds the users among the ids of the events it brought
    # back. Before, it said how many erasures to redo, and the operator had to find whom from their own records.
    client = connect(clickhouse_dsn)
    backups = Backups(client)

    # Erased before the backup, then back with new events of their own: the backup holds those, and they stay.
    assert api.post("/admin/erase", json={"user_id": KEPT}, headers=ADMIN).status_code == 200
    Writer(client).insert_events([event(i, KEPT, dated=False) for i in range(100, 105)])
    taken = backups.take("test")
    for user in (ERASED, "no-events-of-theirs"):
        assert api.post("/admin/erase", json={"user_id": user}, headers=ADMIN).status_code == 200
    # Under another key no one is found, and the backup's events are back.
    other = backups.restore(
        taken.name, 0, "test", redo=redoing(client, taken.name, "another-secret-0123456789abcdef0123")
    )
    assert (other.erased_since, other.redone) == (2, Redone(users=2, found=0, events=0, dead_letters=0, complete=True))
    assert reads(api)["users"] == {ERASED: 40, KEPT: 5}

    # Stopped while it erases again: unfinished, as a restore stopped after its drop, so nothing starts on it.
    # Killed after recording an erasure numbered after the ordinal it had taken, which is never recorded: the
    # next attempt counted one less than the numbers used, and took that erasure's for its own.
    def failing(first: int) -> Redone:
        digest, now_ms = user_hash(ERASED, ERASURE_SECRET), int(time.time() * 1000)
        Audit(client).record(Erasure("killed", now_ms, "eventpipe restore", digest, 0, 0, True), first)
        raise StorageError("the store went away")

    with pytest.raises(BackupError, match="the store is incomplete: run this restore again"):
        backups.restore(taken.name, 0, "test", redo=failing)
    assert unfinished_restore(client) is not None
    restored = backups.restore(taken.name, 0, "test", redo=redoing(client, taken.name))
    assert restored.redone == Redone(users=2, found=1, events=40, dead_letters=len(NAMING), complete=True)
    ordinals = client.query("SELECT ordinal FROM erasures UNION ALL SELECT ordinal FROM restores WHERE finished")
    assert sorted(row[0] for row in ordinals.result_rows) == [1, 2, 3, 4, 6, 7, 8], "each its own place"
    # The next process loads the tables again: no delete of the redo may be left to run there (a part the
    # restore's renumbering left took them up again, their keys gone: every later mutation waited behind them).
    for table in ("dead_letters", "events", "events_by_user", "arrivals"):
        client.command(f"DETACH TABLE {table}")
        client.command(f"ATTACH TABLE {table}")
    pending = "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"
    assert client.query(pending).result_rows[0][0] == 0, "a delete left for the next process"
    after = reads(api)
    assert after["users"] == {ERASED: 0, KEPT: 5}
    assert not any(item.startswith(f"{ERASED}/") for item in after["export"] + after["feed"])
    audit = api.get("/admin/erasures", params={"user_id": ERASED}, headers=ADMIN).json()["items"]
    assert [item["key_name"] for item in audit] == ["eventpipe restore", "eventpipe restore", ADMIN_NAME], audit
    # After the restore in the audit's order: a backup taken since holds no one to erase again. The user the
    # restore could not find is still said to be held again: no events of theirs, but maybe dead letters.
    time.sleep(1.1)  # a backup's name gives its time to the second
    taken = backups.take("test")
    again = backups.restore(taken.name, 0, "test", redo=redoing(client, taken.name))
    assert (again.erased_since, again.returned, again.redone) == (0, 1, Redone(0, 0, 0, 0, True))


def test_undoing_a_restore_keeps_the_events_a_user_erased_before_it_sent_since(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # The restore's own erasure of the user came after the backup of what it replaced, which held the events
    # the user sent after their erasure: restoring that backup (the undo) erased them too (found by an attack).
    client = connect(clickhouse_dsn)
    backups = Backups(client)
    taken = backups.take("test")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    Writer(client).insert_events([event(i, ERASED, dated=False) for i in range(100, 105)])
    first = backups.restore(taken.name, 0, "test", redo=redoing(client, taken.name))
    assert first.redone == Redone(users=1, found=1, events=40, dead_letters=len(NAMING), complete=True)
    assert first.replaced is not None and reads(api)["users"] == {ERASED: 0, KEPT: 40}
    undo = backups.restore(first.replaced.name, 0, "test", redo=redoing(client, first.replaced.name))
    assert (undo.erased_since, undo.returned, undo.redone) == (0, 0, Redone(0, 0, 0, 0, True))
    assert reads(api)["users"] == {ERASED: 5, KEPT: 40}


def test_restoring_the_backup_of_what_a_restore_replaced_says_whom_it_brings_back(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # That backup was taken after the first restore had brought the user back: its own time said nothing
    # of an erasure made before it, and the user came back unsaid (found by an attack).
    backups = Backups(connect(clickhouse_dsn))
    taken = backups.take("test")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    time.sleep(1.1)  # the backup of what the restore replaces is named in a later second than the erasure
    first = backups.restore(taken.name, 0, "test")
    assert (first.erased_since, first.returned) == (1, 0)
    assert first.replaced is not None
    time.sleep(1.1)  # a backup's name gives its time to the second: the next is taken after this restore
    undo = backups.restore(first.replaced.name, 0, "test")
    assert (undo.erased_since, undo.returned, reads(api)["users"][ERASED]) == (0, 0, 0)
    assert undo.replaced is not None  # the store the first restore made: the user back in it
    time.sleep(1.1)
    again = backups.restore(undo.replaced.name, 0, "test")
    assert reads(api)["users"][ERASED] == 40
    assert (again.erased_since, again.returned) == (0, 1)
    assert again.returned_since_ms >= taken.taken_ms
    # Erased again, the user is in no backup taken since, and no restore of one says otherwise.
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).json()["events"] == 40
    time.sleep(1.1)
    clean = backups.take("test")
    assert backups.restore(clean.name, 0, "test").returned == 0
    assert reads(api)["users"] == {ERASED: 0, KEPT: 40}
    # On a new host the store knows neither the backup nor the restores behind it: it cannot tell, and says so.
    connect(clickhouse_dsn).command("TRUNCATE TABLE backups")
    assert backups.restore(clean.name, 0, "test").returned is None


# An hour, in ns: the step of an API's clock an attack made (a clock shim) while a backup was taken.
HOUR_NS = 3_600 * 10**9


def test_a_restore_counts_an_erasure_made_after_the_backup_under_a_clock_set_back(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # The backup taken while the clock was an hour ahead, the clock set right, then the user erased: the
    # erasure's time is before the backup's. Compared by time, the restore brought the user's events back and
    # said nothing (found by an attack); in the audit's order the erasure came after the backup.
    ahead = Backups(connect(clickhouse_dsn), clock=lambda: time.time_ns() + HOUR_NS)
    taken = ahead.take("test")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    audit = api.get("/admin/erasures", params={"user_id": ERASED}, headers=ADMIN).json()["items"]
    assert len(audit) == 1 and audit[0]["erased_at"] < rfc3339(taken.taken_ms), "recorded as if before the backup"
    restored = Backups(connect(clickhouse_dsn)).restore(taken.name, 0, "test")
    assert reads(api)["users"] == {ERASED: 40, KEPT: 40}
    assert restored.erased_since == 1
    # Said from the oldest time the audit gives those erasures: the operator finds this one from then on.
    assert rfc3339(restored.erased_since_ms) == audit[0]["erased_at"]


def test_a_user_erased_again_under_a_clock_set_back_is_said_to_be_held_again(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # Erased, brought back by a restore of a backup from before; a backup then taken under a clock an hour
    # ahead; the clock set right and the user erased again. That backup holds the user, erased before it
    # was taken and erased again after: by time the second erasure came before it and hid the first.
    backups = Backups(connect(clickhouse_dsn))
    before = backups.take("test")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    assert backups.restore(before.name, 0, "test").erased_since == 1
    ahead = Backups(connect(clickhouse_dsn), clock=lambda: time.time_ns() + HOUR_NS).take("test")
    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).json()["events"] == 40
    again = backups.restore(ahead.name, 0, "test")
    assert reads(api)["users"][ERASED] == 40
    assert (again.erased_since, again.returned) == (1, 1)
    assert again.returned_since_ms < ahead.taken_ms


def test_an_integer_user_id_erases_its_letters_not_every_letter_holding_that_number(
    client: clickhouse_connect.driver.Client,
) -> None:
    named = [
        b'{"user_id": 913297552, "timestamp": "x"}',
        b'{"data": {"user_id":913297552}, "timestamp": "x"}',
        b'{"user_id": "913297552", "timestamp": "x"}',
        b"user 913297552 not json",
        # The key as the parser reads it, however escaped: a replay stored these as the user's events.
        b'{"user\\u005fid": 913297552, "timestamp": "x"}',
        b'{"data": {"\\u0075ser_id" :\n913297552}, "timestamp": "x"}',
        # The same number with a fraction or an exponent, as encoders of doubles write it: the parser
        # refuses it as a user id, and the letter still names the user (and holds the rest of its event).
        b'{"user_id": 913297552.0, "email": "a@example.com", "timestamp": "x"}',
        b'{"data": {"user_id": 9.13297552e8}, "timestamp": "x"}',
        b'{"user_id": 913297552E0, "timestamp": "x"}',
    ]
    others = [
        b'{"user_id": "bob", "amount_cents": 913297552, "timestamp": "x"}',
        b'{"user_id": "carol", "order": "ORD 913297552", "timestamp": "x"}',
        b'{"user_id": 9132975520, "timestamp": "x"}',
        b'{"user_id": 913297552.5, "timestamp": "x"}',
        b'{"user_id": 9.132975521e8, "timestamp": "x"}',
    ]
    Writer(client).insert_dead_letters([dead_letter(payload, i) for i, payload in enumerate(named + others)])
    assert Eraser(client).erase("913297552") == Erased(0, len(named), complete=True)
    left = sorted(str(row[0]).encode() for row in client.query("SELECT payload FROM dead_letters FINAL").result_rows)
    assert left == sorted(others)

    # -0 is the integer 0 to the parser, which stores its user as "0"; 0.0 and 0e5 are that number; 10 another.
    zeros = [
        b'{"user_id": -0, "timestamp": "x"}',
        b'{"user_id":0,"timestamp":"x"}',
        b'{"user_id": 0.0, "timestamp": "x"}',
        b'{"user_id": -0e5, "timestamp": "x"}',
    ]
    not_zero = [b'{"user_id": 0.5, "timestamp": "x"}', b'{"user_id": 10, "timestamp": "x"}']
    letters = [dead_letter(payload, 100 + i) for i, payload in enumerate(zeros + not_zero)]
    Writer(client).insert_dead_letters(letters)
    assert Eraser(client).erase("0") == Erased(0, len(zeros), complete=True)
    left = sorted(str(row[0]).encode() for row in client.query("SELECT payload FROM dead_letters FINAL").result_rows)
    assert left == sorted(others + not_zero)


def test_an_erasure_racing_the_users_own_stream_leaves_each_event_whole_or_gone_in_every_table(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str
) -> None:
    migrate(connect(clickhouse_dsn))
    api = admin_client(clickhouse_dsn)
    done = threading.Event()

    def stream() -> None:  # the user's events in bursts of 50 every 50 ms, as a busy app sends them
        for burst in range(80):
            messages = [
                (f"events/t{i % 3}", json.dumps({"event_id": f"r-{burst}-{i}", "user_id": ERASED}).encode())
                for i in range(50)
            ]
            publish_raw(broker.url, messages)
            time.sleep(0.05)
        done.set()

    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        publisher = threading.Thread(target=stream)
        publisher.start()
        while not done.is_set():
            assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
        publisher.join()
        wait_until(lambda: run.metric("eventpipe_events_stored_total") == 4000, what="the whole stream stored")
    # An event a batch committed while an erasure ran is whole or gone: /feed (arrivals) never serves one
    # that /events has forgotten.
    client = connect(clickhouse_dsn)
    held = {table: ids_of(client, table) for table in ("events", "events_by_user", "arrivals")}
    assert held["events"] == held["events_by_user"] == held["arrivals"]


def ids_of(client: Client, table: str, user: str | None = ERASED) -> set[str]:
    """The ids of `user`'s rows in `table`, or of every row with None."""
    where = "WHERE user_id = %(user)s" if user is not None else ""
    rows = client.query(f"SELECT event_id FROM {table} {where}", {"user": user}).result_rows  # noqa: S608
    return {str(row[0]) for row in rows}


@pytest.mark.parametrize("merged", [False, True], ids=["copies apart", "copies merged"])
def test_an_event_whose_copies_name_other_users_is_gone_or_kept_alike_in_every_read(
    clickhouse_dsn: str, client: Client, writer: Writer, merged: bool
) -> None:
    # Copies of one event (its key: time, type, id) may name different users or none: a producer's
    # re-send with another user_id or without one. `events` keeps the copy received first; the user
    # index and the feed's table keep every copy. Once `events` merged them, erasing the first copy's
    # user left /events, /export and the counts without the event while /feed and the other user's
    # page still served it (found by an attack on a live up).

    def copy(event_id: str, user: str | None, received_ms: int) -> Event:
        return Event(event_id, "t", MARCH_MS, received_ms, user, "events/t", json.dumps({"user": user}))

    writer.insert_events([copy("a-then-b", ERASED, MARCH_MS), copy("a-then-none", ERASED, MARCH_MS)])
    writer.insert_events([copy("b-then-a", KEPT, MARCH_MS), copy("a-only", ERASED, MARCH_MS)])
    writer.insert_events([copy("b-only", KEPT, MARCH_MS)])
    writer.insert_events(
        [
            copy("a-then-b", KEPT, MARCH_MS + 1),
            copy("a-then-none", None, MARCH_MS + 1),
            copy("b-then-a", ERASED, MARCH_MS + 1),
        ]
    )
    if merged:
        for table in ("events", "events_by_user", "arrivals"):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
    api = admin_client(clickhouse_dsn)
    before = reads(api)
    assert (
        before["events"]
        == before["export"]
        == before["feed"]
        == ["a-only", "a-then-b", "a-then-none", "b-only", "b-then-a"]
    )

    assert api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).status_code == 200
    after = reads(api)
    # An event any copy of which named the erased user goes with every copy, whoever the others name.
    assert after["events"] == after["export"] == after["feed"] == ["b-only"]
    assert after["users"] == {ERASED: 0, KEPT: 1}
    assert (after["total"], after["window"], after["series"]) == (1, 1, 1)
    assert [(item["key"], item["value"]) for item in after["breakdown"]] == [(KEPT, 1)]
    for event_id in ("a-only", "a-then-b", "a-then-none", "b-then-a"):
        assert api.get(f"/events/{event_id}", headers=AUTH).status_code == 404, event_id
    held = {table: ids_of(client, table, None) for table in ("events", "events_by_user", "arrivals")}
    assert held == {"events": {"b-only"}, "events_by_user": {"b-only"}, "arrivals": {"b-only"}}


@pytest.mark.parametrize("merged", [False, True], ids=["copies apart", "copies merged"])
@pytest.mark.parametrize("cut_short_at", ["events", "arrivals", "events_by_user"])
def test_an_erasure_cut_short_among_shared_copies_is_finished_by_calling_again(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch, cut_short_at: str, merged: bool
) -> None:
    # The other users' copies are found through the user's rows and through `arrivals`: a call that
    # stops before a table (the API stopped, a dropped connection) must leave them findable.
    first = [Event(f"e{i}", "t", MARCH_MS + i, MARCH_MS, ERASED, "events/t", "{}") for i in range(5)]
    writer.insert_events(first)
    writer.insert_events(
        [e._replace(user_id=KEPT if i % 2 else None, received_ms=MARCH_MS + 1) for i, e in enumerate(first)]
    )
    if merged:
        client.command("OPTIMIZE TABLE events FINAL")
    eraser, real_delete = Eraser(client), Eraser._delete

    def stop_before(self: Eraser, table: str, sql: str, parameters: dict[str, object]) -> None:
        if table == cut_short_at and "user_id NOT IN" not in sql:
            raise RuntimeError("the API stopped")
        real_delete(self, table, sql, parameters)

    monkeypatch.setattr(Eraser, "_delete", stop_before)
    with pytest.raises(RuntimeError):
        eraser.erase(ERASED)
    monkeypatch.setattr(Eraser, "_delete", real_delete)
    eraser.erase(ERASED)
    held = {table: ids_of(client, table, None) for table in ("events", "events_by_user", "arrivals")}
    assert held == {"events": set(), "events_by_user": set(), "arrivals": set()}


def test_no_moment_of_an_erasure_has_feed_serving_an_event_events_forgot(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # README: an event is "never served by /feed after /events forgot it". The feed reads `arrivals`,
    # /events reads `events`; `arrivals` went second to last, so for the seconds between the two
    # deletes (6.5 s on a live `up`, found by an attack following /feed) /feed served what /events
    # answered 404 for.
    mine = [Event(f"e{i}", "t", MARCH_MS + i, MARCH_MS, ERASED, "events/t", "{}") for i in range(4)]
    writer.insert_events(mine)
    writer.insert_events(
        [e._replace(user_id=KEPT if i % 2 else None, received_ms=MARCH_MS + 1) for i, e in enumerate(mine)]
    )
    real_delete, fed_not_listed = Eraser._delete, list[tuple[str, set[str]]]()

    def checked(self: Eraser, table: str, sql: str, parameters: dict[str, object]) -> None:
        real_delete(self, table, sql, parameters)
        fed_not_listed.append((table, ids_of(client, "arrivals", None) - ids_of(client, "events", None)))

    monkeypatch.setattr(Eraser, "_delete", checked)
    assert Eraser(client).erase(ERASED).events == 4
    assert [(table, ids) for table, ids in fed_not_listed if ids] == []
    held = {table: ids_of(client, table, None) for table in ("events", "events_by_user", "arrivals")}
    assert held == {"events": set(), "events_by_user": set(), "arrivals": set()}


def test_another_users_copy_committed_while_an_erasure_runs_goes_with_the_event(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy received before the erasure but committed during it (a batch the erasure waits for) that
    # names another user: found through the user's rows in the user index, which therefore go last.
    mine = Event("e1", "t", MARCH_MS, MARCH_MS, ERASED, "events/t", "{}")
    writer.insert_events([mine])
    real_settle = Eraser._settle

    def late_batch(self: Eraser, cut_ms: int) -> bool:
        writer.insert_events([mine._replace(user_id=KEPT, received_ms=cut_ms - 1)])
        return real_settle(self, cut_ms)

    monkeypatch.setattr(Eraser, "_settle", late_batch)
    assert Eraser(client).erase(ERASED).events == 1
    held = {table: ids_of(client, table, None) for table in ("events", "events_by_user", "arrivals")}
    assert held == {"events": set(), "events_by_user": set(), "arrivals": set()}


def test_letters_naming_the_user_are_counted_as_deleted_and_those_received_during_the_call_kept(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like events, letters received before the call go, those received after it began stay. They were
    # counted at the start and deleted with no cut after the wait: the answer and the audit said 836 where
    # 1,211 went (found by an attack on the admin operations).
    def payload(n: int) -> bytes:
        return b'{"user_id": "%s", "n": %d, "timestamp": "x"}' % (ERASED.encode(), n)

    writer.insert_dead_letters([dead_letter(payload(0), 0)])
    real_settle = Eraser._settle

    def during_the_wait(self: Eraser, cut_ms: int) -> bool:
        late = parse("events/bad", payload(2), cut_ms + 1, Limits())
        assert isinstance(late, Rejection)
        writer.insert_dead_letters([dead_letter(payload(1), 1), late])  # one received before the cut, one after
        return real_settle(self, cut_ms)

    monkeypatch.setattr(Eraser, "_settle", during_the_wait)
    assert Eraser(client).erase(ERASED).dead_letters == 2
    left = client.query("SELECT count() FROM dead_letters FINAL").result_rows[0][0]
    assert left == 1, "the letter received after the call began is kept"


def test_another_call_erasing_the_user_meanwhile_leaves_this_ones_keys_to_it(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two API processes on one server erasing one user: the call that finished first dropped the keys row
    # of the one still running, whose next delete then failed (Code 125: a scalar subquery of an Array with
    # no row) and answered 503; a delete already submitted would have failed for good (found by an attack).
    writer.insert_dead_letters([dead_letter(b'{"user_id": "%s", "timestamp": "x"}' % ERASED.encode(), 0)])
    real_settle = Eraser._settle

    def another_call_meanwhile(self: Eraser, cut_ms: int) -> bool:
        monkeypatch.setattr(Eraser, "_settle", real_settle)
        Eraser(client).erase(ERASED)  # from its start to its end, as another process's call
        return real_settle(self, cut_ms)

    monkeypatch.setattr(Eraser, "_settle", another_call_meanwhile)
    assert Eraser(client).erase(ERASED).dead_letters == 0  # the other call took the letter
    assert client.command("SELECT count() FROM erasure_keys") == 0, "each call's keys go once it is done"


def test_on_the_embedded_engine_the_next_erasure_removes_the_ids_a_call_killed_with_its_process_left(
    client: Client, writer: Writer
) -> None:
    # `eventpipe up` killed during an erasure: the call had hidden the ids (store.concealment) and never released
    # them. Called again, the erasure answered complete, and the ids stayed in clear in erasure_keys for a day,
    # for good with no erasure after. chDB lets one process open a store, whose calls take turns: nothing can
    # still read them there.
    writer.insert_events([event(0, ERASED, True)])
    killed = hide(client, time.time_ns() // 1_000_000 - 60_000, {"users": [ERASED]})
    assert Eraser(client, embedded=True).erase(ERASED).events == 1
    assert client.command("SELECT count() FROM erasure_keys") == 0, f"the killed call's {killed} is left"
    # On a server another process's call may still be running: its row is left for the day, as before.
    hide(client, time.time_ns() // 1_000_000 - 60_000, {"users": [KEPT]})
    Eraser(client, embedded=False).erase(ERASED)
    assert client.command("SELECT count() FROM erasure_keys WHERE name = 'users'") == 1


def test_an_erasure_leaves_the_id_in_no_mutation_and_no_file_but_the_masked_rows(
    api: TestClient, clickhouse_dsn: str
) -> None:
    # ClickHouse keeps a mutation's command, its bound values written in, in mutation_N.txt beside the
    # table's parts and in system.mutations, until 100 newer ones of that table exist: an attack found the
    # erased id there in six tables after the erasure answered, and the dead-letter patterns made of it.
    response = api.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    assert response.status_code == 200, response.text
    client = connect(clickhouse_dsn)
    # The id, its spellings, and the patterns made of it for the dead letters.
    forms = {ERASED}
    for value in mentions(ERASED).values():
        forms |= set(value) if isinstance(value, list) else {value} if isinstance(value, str) and value else set()
    commands = [
        str(row[0])
        for row in client.query("SELECT command FROM system.mutations WHERE database = currentDatabase()").result_rows
    ]
    assert len(commands) >= 6, "the erasure's deletes are in the log"
    assert [c for c in commands if any(form in c for form in forms)] == []

    # On disk: only the parts of the tables that held the user's rows, which keep the masked rows'
    # bytes until merged (docs/operations.md, "The disk, for a while"); no mutation file, nothing else.
    tables = client.query("SELECT name, data_paths FROM system.tables WHERE database = currentDatabase()").result_rows
    naming = []
    for name, paths in tables:
        for path in map(Path, paths):
            for file in (f for f in path.rglob("*") if f.is_file()):
                if any(form.encode() in file.read_bytes() for form in forms):
                    in_part = file.parent != path
                    naming.append((name, str(file.relative_to(path)), in_part))
    assert naming, "the masked rows are still on disk: the search reads the right directories"
    assert [n for n in naming if not n[2] or n[0] == "erasure_keys"] == []


def test_letters_naming_the_user_as_gson_escapes_it_go_also_when_isvalidjson_refuses_them(
    client: Client, writer: Writer
) -> None:
    # Gson writes dXNlcg== as "dXNlcg\u003d\u003d". In JSON ClickHouse's isValidJSON refuses (a number beyond
    # a double, a raw tab in a string, a payload cut at the size limit) only the word's spellings were
    # looked for, none of them Gson's: the erasure answered 1 of these 4 letters and /dead-letters still
    # served the 3 others (found by an attack on a live up).
    user, gson = "dXNlcg==", "dXNlcg\\u003d\\u003d"
    naming = [
        b'{"event_id":"g-a","user_id":"%s","reading":1e400}' % gson.encode(),
        b'{"event_id":"g-b","user_id":"%s","note":"tab\there"}' % gson.encode(),
        b'{"event_id":"g-d","user_id":"%s","blob":"%s"}' % (gson.encode(), b"x" * 66_000),  # stored cut
        b'{"event_id":"g-c","user_id":"%s","timestamp":"05/07/2025"}' % gson.encode(),  # valid JSON
    ]
    # Another user's, dXNlcg= as Gson writes it, in the same shapes: kept.
    others = [payload.replace(b"\\u003d\\u003d", b"\\u003d") for payload in naming]
    writer.insert_dead_letters([dead_letter(payload, i) for i, payload in enumerate(naming + others)])

    assert Eraser(client).erase(user).dead_letters == len(naming)
    left = client.query("SELECT payload FROM dead_letters FINAL").result_rows
    assert sorted(str(row[0]).encode()[:60] for row in left) == sorted(payload[:60] for payload in others)


def test_the_first_time_of_an_event_a_batch_commits_between_the_first_pass_deletes_goes_too(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of the user's undated events committing after the first pass emptied undated_events and
    # before it emptied arrivals and events: those deletes took its rows, so the second pass found no
    # table holding any and skipped undated_events, and the index rows giving its keys went last. Its
    # first times stayed, and a re-send of such an id without a timestamp took the erased event's time
    # (found by an attack racing an erasure with the user's stream: 10 to 28 rows in 3 runs of 4).
    late = [event(i, ERASED, dated=False) for i in range(4)]
    real_delete, batches = Eraser._delete, [late]

    def batch_between(self: Eraser, table: str, sql: str, parameters: dict[str, object]) -> None:
        real_delete(self, table, sql, parameters)
        if table == "undated_events" and batches:
            writer.insert_events(batches.pop())

    monkeypatch.setattr(Eraser, "_delete", batch_between)
    assert Eraser(client).erase(ERASED).events == len(late)
    held = {table: ids_of(client, table, None) for table in ("events", "events_by_user", "arrivals", "undated_events")}
    assert held == {"events": set(), "events_by_user": set(), "arrivals": set(), "undated_events": set()}
    monkeypatch.setattr(Eraser, "_delete", real_delete)
    # Sent again without a timestamp, the event is a new one: stamped with its own receive time.
    again = parse("events/t0", json.dumps({"event_id": late[0].event_id}).encode(), MARCH_MS + HOUR_MS, Limits())
    assert isinstance(again, Event)
    writer.insert_events([again])
    stored = client.query("SELECT toUnixTimestamp64Milli(timestamp) FROM events").result_rows
    assert stored == [(MARCH_MS + HOUR_MS,)]


def test_a_replay_in_another_api_process_stores_nothing_the_erasure_leaves_behind(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two API processes on one store (two admin objects, each with its own lock): a replay in one had read
    # the user's letters and stored their events after the other's erasure had run its second pass, and that
    # erasure answered complete, its audit 0 events, while /events served them all (found by an attack: 4
    # of 10 runs with two `eventpipe api` processes). Here the replay reads its letters, then stores their
    # events only once the erasure has deleted the letters, as late as it can and still have read them.
    client = _with_late_letters(clickhouse_dsn)
    replaying, erasing = admin_client(clickhouse_dsn, max_past_days=0), admin_client(clickhouse_dsn, max_past_days=0)

    store, reading = replay.Replayer._replay, threading.Event()

    def after_the_letters_go(self: replay.Replayer, read: list[Any], report: replay.Report) -> None:
        reading.set()
        wait_until(lambda: client.command("SELECT count() FROM dead_letters") == 0, timeout=60)
        store(self, read, report)

    monkeypatch.setattr(replay.Replayer, "_replay", after_the_letters_go)
    replayed: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: replayed.update(replaying.post("/admin/dead-letters/replay", json={}, headers=ADMIN).json())
    )
    thread.start()
    assert reading.wait(30)
    erased = erasing.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    thread.join(timeout=120)
    assert replayed["stored"] == 10, replayed
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"events": 10, "dead_letters": 10, "complete": True}
    assert list(walk(erasing, "/events", user_id=ERASED)) == [], "the replay's events outlived the erasure"
    assert client.command("SELECT count() FROM worker_marks FINAL WHERE NOT retired") == 0, "the replay ended"
    # Recorded after the letters went, its outcomes were left behind them (stop 45's "left alone").
    assert client.command("SELECT count() FROM dead_letter_outcomes") == 0, "the replay's outcomes outlived the letters"


def test_the_erasure_that_finishes_after_a_replay_outlived_the_wait_leaves_none_of_its_outcomes(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replay past the erasure's wait records its outcomes of the erased letters after the call answered
    # complete: false; the call made once it has ended, as the answer says, found no letter and no replay
    # running, answered complete: true and left those outcomes (found by a review).
    client = _with_late_letters(clickhouse_dsn)
    monkeypatch.setattr(erasure, "REPLAY_WAIT_S", 1.0)
    replaying, erasing = admin_client(clickhouse_dsn, max_past_days=0), admin_client(clickhouse_dsn, max_past_days=0)
    store, reading, finish = replay.Replayer._replay, threading.Event(), threading.Event()

    def past_the_wait(self: replay.Replayer, read: list[Any], report: replay.Report) -> None:
        reading.set()
        assert finish.wait(60)
        store(self, read, report)

    monkeypatch.setattr(replay.Replayer, "_replay", past_the_wait)
    thread = threading.Thread(target=lambda: replaying.post("/admin/dead-letters/replay", json={}, headers=ADMIN))
    thread.start()
    assert reading.wait(30)
    first = erasing.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    finish.set()
    thread.join(timeout=120)
    assert first.status_code == 200 and first.json()["complete"] is False, first.text
    assert client.command("SELECT count() FROM dead_letter_outcomes") == 10, "the replay recorded its outcomes"
    again = erasing.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN)
    assert again.status_code == 200 and again.json() == {"events": 10, "dead_letters": 0, "complete": True}, again.text
    assert client.command("SELECT count() FROM dead_letter_outcomes") == 0, "the replay's outcomes outlived the letters"


def _with_late_letters(dsn: str) -> Client:
    """A migrated store holding 10 dead letters of ERASED: too old when received, replayable once the limit
    on the past is lifted (`max_past_days=0`)."""
    client = connect(dsn)
    migrate(client)
    received_ms = int(time.time() * 1000) - HOUR_MS
    limits = Limits(max_past_ms=730 * 24 * HOUR_MS)
    old = received_ms - 3 * 365 * 24 * HOUR_MS
    letters = [
        parse(
            "events/late",
            json.dumps({"event_id": f"late-{i}", "timestamp": old + i, "user_id": ERASED}).encode(),
            received_ms + i,
            limits,
        )
        for i in range(10)
    ]
    assert all(isinstance(letter, Rejection) for letter in letters)
    Writer(client).insert_dead_letters([letter for letter in letters if isinstance(letter, Rejection)])
    return client


def test_on_the_embedded_engine_a_replay_of_a_process_since_gone_is_not_waited_for(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `eventpipe up` killed during a replay left its mark running: every erasure for the next 30 minutes
    # waited its minute and answered complete: false (found by an attack), with no replay left to end.
    # chDB lets one process open a store, so a replay another process marked there has ended.
    client = connect(clickhouse_dsn)
    migrate(client)
    monkeypatch.setattr(erasure, "REPLAY_WAIT_S", 1.0)
    now_ms = time.time_ns() // 1_000_000
    killed = mark.replay_name("0123456789abcdef").replace(f"@{mark.PROCESS}", "@fedcba9876543210")
    Writer(client).insert_marks([Mark(killed, REPLAY_AHEAD, False, now_ms)])
    started = time.monotonic()
    assert Eraser(client, embedded=True).erase("someone").complete is True
    assert time.monotonic() - started < erasure.REPLAY_WAIT_S, "the dead process's replay was waited for"
    # On a server, the process that marked it may run on another host: waited for, as before.
    assert Eraser(client, embedded=False).erase("someone").complete is False
    # A replay of this process is waited for on either.
    Writer(client).insert_marks([Mark(mark.replay_name("00112233aabbccdd"), REPLAY_AHEAD, False, now_ms)])
    assert Eraser(client, embedded=True).erase("someone").complete is False


def test_an_erasure_or_a_replay_behind_a_hung_backup_is_told_to_retry_and_runs_once_it_has_ended(
    clickhouse_dsn: str, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A BACKUP that a stalled disk holds kept the admin routes' one lock as long as the engine took: every
    # erasure and replay asked for meanwhile waited without end, each holding a thread of the API's pool.
    monkeypatch.setattr(turn, "WAIT_S", 1.0)
    release, hanging = threading.Event(), threading.Event()

    class Hung(Backups):
        def _take(self, taken_by: str) -> Any:
            hanging.set()
            assert release.wait(60)
            return super()._take(taken_by)

    admin = admin_client(clickhouse_dsn, backups=lambda backups: Hung(backups._client, backups._turn))
    taken: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: taken.update(admin.post("/admin/backups", headers=ADMIN).json()))
    thread.start()
    assert hanging.wait(30)
    started = time.monotonic()
    for path, body, what in [
        ("/admin/erase", {"user_id": ERASED}, "an erasure"),
        ("/admin/dead-letters/replay", {}, "a dead-letter replay"),
    ]:
        refused = admin.post(path, json=body, headers=ADMIN)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30", refused.text
        assert refused.json()["error"] == "busy"
        assert refused.json()["detail"].startswith(f"{what} waited 1 s for its turn and a backup has run for ")
    assert admin.get("/admin/backups", headers=ADMIN).json()["error"] == "busy"
    assert time.monotonic() - started < 10
    assert reads(api)["users"][ERASED] == 40, "nothing was erased"
    release.set()
    thread.join(timeout=120)
    assert taken["events"] == 80, taken
    assert admin.post("/admin/erase", json={"user_id": ERASED}, headers=ADMIN).json()["events"] == 40


def test_an_unsettled_erasure_leaves_no_id_in_a_mutation_where_subqueries_run_on_the_initiator(
    client: Client, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With mutations_execute_subqueries_on_initiator on (a server profile's setting), ClickHouse runs each
    # delete's scalar subqueries before it stores the mutation, and stores their results written in: the letter
    # deletes of an erasure a silent worker left unsettled, one per user, read the id's patterns so, and
    # system.mutations and mutation_N.txt held the id itself (found by an attack). Those deletes are gone (one
    # delete by the letters' ids, as when settled), and every delete pins the setting off.
    writer.insert_events([event(1, ERASED, dated=True)])
    writer.insert_dead_letters([dead_letter(json.dumps({"user_id": ERASED, "timestamp": "x"}).encode(), 0)])
    monkeypatch.setattr(erasure, "SETTLE_S", 0.3)
    writer.insert_marks([Marker("gone").start()])
    forms = {ERASED}
    for value in mentions(ERASED).values():
        forms |= set(value) if isinstance(value, list) else {value} if isinstance(value, str) and value else set()
    client.command("SET mutations_execute_subqueries_on_initiator = 1")
    try:
        erased = Eraser(client).erase(ERASED)
    finally:
        client.command("SET mutations_execute_subqueries_on_initiator = 0")
    assert (erased.events, erased.dead_letters, erased.complete) == (1, 1, False)
    commands = [
        str(row[0])
        for row in client.query("SELECT command FROM system.mutations WHERE database = currentDatabase()").result_rows
    ]
    assert any("dead_letter_id IN" in c for c in commands), "the letter delete is in the log"
    assert [c[:200] for c in commands if any(form in c for form in forms)] == []
