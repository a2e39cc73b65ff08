"""Dead-letter replay over the real engine: letters stored under strict settings, replayed under relaxed ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventpipe.events import Limits, Rejection, parse
from eventpipe.ingest import replay
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer
from tests.support.api import ADMIN, AUTH, admin_client, walk
from tests.support.clickhouse_http import ClickHouseHttp, migrated
from tests.support.mqtt import publish_raw
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.wait import wait_until

DAY_MS = 86_400_000
RECEIVED_MS = 1_772_323_200_000  # 2026-03-01
DEFAULTS = Limits(max_past_ms=730 * DAY_MS)  # as the worker parses with the default settings
# What an operator relaxes: the past bound lifted, a producer's envelope key, a larger payload limit.
RELAXED = {"max_past_days": 0, "envelope_keys": ["event_data", "data", "payload"], "max_payload_bytes": 1 << 20}
# Over a 256-byte limit when received: only its first 256 bytes were kept.
BIG = json.dumps({"event_type": "upload", "blob": "x" * 400}).encode()


def letter(topic: str, payload: bytes, received_ms: int, limits: Limits = DEFAULTS) -> Rejection:
    parsed = parse(topic, payload, received_ms, limits)
    assert isinstance(parsed, Rejection), parsed
    return parsed


def late(i: int) -> bytes:
    """Three years old at its receipt: over the default past bound (730 days)."""
    body = {"event_id": f"late-{i}", "timestamp": RECEIVED_MS - 3 * 365 * DAY_MS + i, "user_id": f"u{i}"}
    return json.dumps(body).encode()


def wrapped(i: int) -> bytes:
    """No id, no time, and its type inside an envelope key the defaults do not read."""
    return json.dumps({"payload": {"event_type": "signup", "user_id": f"w{i}"}, "plan": "pro", "n": i}).encode()


def seed(writer: Writer) -> None:
    letters = [letter("events/purchase", late(i), RECEIVED_MS + i) for i in range(5)]
    letters += [letter("events/", wrapped(i), RECEIVED_MS + 10 + i) for i in range(5)]
    letters.append(letter("events/x", b"{not json", RECEIVED_MS + 20))
    letters.append(letter("events/upload", BIG, RECEIVED_MS + 21, Limits(max_payload_bytes=256)))
    writer.insert_dead_letters(letters)


def post(api: TestClient, body: dict[str, Any] | None = None, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    response = api.post("/admin/dead-letters/replay", json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def statuses(api: TestClient) -> dict[str, int]:
    counts = {}
    for status in ("pending", "failed", "replayed"):
        counts[status] = len(list(walk(api, "/dead-letters", status=status, limit=3)))
    return counts


def test_letters_replayed_after_settings_are_relaxed_are_stored_once(clickhouse_dsn: str, writer: Writer) -> None:
    seed(writer)
    strict = admin_client(clickhouse_dsn)
    assert statuses(strict) == {"pending": 12, "failed": 0, "replayed": 0}
    # An empty filter is no filter, as for every other (`?status=` was a 422).
    assert len(list(walk(strict, "/dead-letters", status="", reason="", limit=5))) == 12

    # Under the settings they failed with, nothing passes; failing again, they are not taken again.
    first = post(strict)
    assert (first["examined"], first["stored"], first["still_failing"], first["remaining"]) == (12, 0, 12, 0)
    assert post(strict)["examined"] == 0
    assert statuses(strict) == {"pending": 0, "failed": 12, "replayed": 0}

    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    answer = post(relaxed)
    assert (answer["examined"], answer["stored"], answer["still_failing"], answer["remaining"]) == (12, 10, 2, 0)
    why = {failure["reason"]: failure["detail"] for failure in answer["failures"]}
    assert set(why) == {"invalid_json", "cut"}
    assert f"cut to its first 256 of {len(BIG)} bytes" in why["cut"] and "cannot be replayed" in why["cut"]

    events = list(walk(relaxed, "/events", limit=4))
    assert sorted(item["event_id"] for item in events if item["event_type"] == "purchase") == [
        f"late-{i}" for i in range(5)
    ]
    signups = [item for item in events if item["event_type"] == "signup"]
    assert sorted(item["user_id"] for item in signups) == [f"w{i}" for i in range(5)]
    # Undated: stamped with the time the letter was received, as the worker would have.
    assert sorted(item["timestamp"] for item in signups)[0] == "2026-03-01T00:00:00.010Z"
    assert statuses(relaxed) == {"pending": 0, "failed": 2, "replayed": 10}
    items = list(walk(relaxed, "/dead-letters"))
    assert {item["reason"]: item["status"] for item in items if item["status"] == "failed"} == {
        "invalid_json": "failed",
        "oversize": "failed",
    }

    # A second replay stores nothing; named by id, the failed ones are tried again, the replayed ones never.
    again = post(relaxed)
    assert (again["examined"], again["stored"], again["still_failing"]) == (0, 0, 0)
    failed_ids = [item["dead_letter_id"] for item in items if item["status"] == "failed"]
    replayed_ids = [item["dead_letter_id"] for item in items if item["status"] == "replayed"]
    # Both examined, both failing again, and nothing left due: a client calling again while remaining is
    # above 0 stops here, not for ever.
    named = post(relaxed, {"ids": failed_ids})
    assert (named["examined"], named["still_failing"], named["remaining"]) == (2, 2, 0)
    assert post(relaxed, {"ids": replayed_ids})["examined"] == 0
    # An id no letter has is named, where examined 0 alone said nothing of it.
    mistyped = post(relaxed, {"ids": [*failed_ids, "no-such-letter", "another"]})
    assert (mistyped["examined"], mistyped["unknown"]) == (2, ["another", "no-such-letter"])
    assert post(relaxed, {"ids": replayed_ids})["unknown"] == [] and post(relaxed)["unknown"] == []
    assert relaxed.get("/stats/event-types", headers=AUTH).json()["total"] == 10


def test_a_replay_cut_short_and_done_again_leaves_each_event_once(clickhouse_dsn: str, writer: Writer) -> None:
    seed(writer)
    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    assert post(relaxed)["stored"] == 10
    # Stored, but its outcomes never recorded: as if the API died between the two writes.
    connect(clickhouse_dsn).command("TRUNCATE TABLE dead_letter_outcomes")
    assert post(relaxed)["stored"] == 10
    assert len(list(walk(relaxed, "/events", limit=3))) == 10
    assert relaxed.get("/stats/event-types", headers=AUTH).json()["total"] == 10
    assert Reader(connect(clickhouse_dsn)).count_events() == 10


def test_each_call_examines_a_bounded_number_and_says_how_many_are_left(
    clickhouse_dsn: str, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(writer)
    monkeypatch.setattr(replay, "MAX_EXAMINED", 5)
    monkeypatch.setattr(replay, "CHUNK_BYTES", 100)  # several chunks per call
    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    answers = []
    while not answers or answers[-1]["remaining"]:
        answers.append(post(relaxed))
        assert len(answers) < 5, answers
    assert [answer["examined"] for answer in answers] == [5, 5, 2]
    assert [answer["remaining"] for answer in answers] == [7, 2, 0]
    assert sum(answer["stored"] for answer in answers) == 10


def test_a_selection_replays_only_what_it_names(clickhouse_dsn: str, writer: Writer) -> None:
    seed(writer)
    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    assert post(relaxed, {"reason": "missing_event_type", "until": str(RECEIVED_MS + 12)})["stored"] == 2
    assert post(relaxed, {"reason": "invalid_timestamp", "since": "2026-03-01T00:00:00.003Z"})["stored"] == 2
    assert statuses(relaxed)["replayed"] == 4
    for body in (
        {"since": "2026-03-02", "until": "2026-03-01"},
        {"since": "last week"},
        {"reason": "x", "status": "pending"},
        {"ids": ["x"] * 1001},
        {"ids": "not-a-list"},
    ):
        response = relaxed.post("/admin/dead-letters/replay", json=body, headers=ADMIN)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "invalid_parameter"
    # What a refusal echoes is bounded, however much the body gets wrong: a value or a field name is
    # cut at 60 characters and at most five errors are explained (1,000 of them took 118,929 bytes).
    for body in ({"ids": ["x" * 65] * 1000}, {"zzz" * 1000: 1}):
        response = relaxed.post("/admin/dead-letters/replay", json=body, headers=ADMIN)
        assert response.status_code == 422, response.text[:200]
        assert len(response.json()["detail"]) < 1000, response.text[:200]
    # An id is named by its list and place: "0: String should have at most 64 characters" named nothing.
    one = relaxed.post("/admin/dead-letters/replay", json={"ids": ["ok", "x" * 65]}, headers=ADMIN).json()["detail"]
    assert one.startswith("ids[1]: String should have at most 64 characters"), one
    # A misspelt reason matched nothing: {"examined": 0, ...}, which reads as "nothing to replay".
    misspelt = relaxed.post("/admin/dead-letters/replay", json={"reason": "invalid_timestmp"}, headers=ADMIN)
    assert misspelt.status_code == 422, misspelt.text
    assert "not a dead-letter reason; one of oversize, invalid_utf8, invalid_json" in misspelt.json()["detail"]
    assert statuses(relaxed)["pending"] == 8, "nothing was touched"


def test_a_body_nested_as_deep_as_the_parser_allows_is_never_a_server_error(clickhouse_dsn: str) -> None:
    # The duplicate-field check parses the body a few frames deeper than FastAPI does: a nesting FastAPI had
    # just taken was a RecursionError there, a 500 (a review). Every depth around Python's limit.
    api = admin_client(clickhouse_dsn, **RELAXED)
    headers = {**ADMIN, "Content-Type": "application/json"}
    statuses = {
        api.post(
            "/admin/dead-letters/replay", content=b'{"ids": ' + b"[" * depth + b"]" * depth + b"}", headers=headers
        ).status_code
        for depth in range(700, 1300)
    }
    assert statuses <= {400, 413, 422}, statuses


def test_only_an_admin_key_may_replay(clickhouse_dsn: str, writer: Writer) -> None:
    seed(writer)
    api = admin_client(clickhouse_dsn, **RELAXED)
    refused = api.post("/admin/dead-letters/replay", headers=AUTH)
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    assert api.post("/admin/dead-letters/replay", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.post("/admin/dead-letters/replay").status_code == 401
    assert statuses(api)["pending"] == 12  # nothing was touched


def test_a_replay_and_the_same_message_over_mqtt_store_one_event(
    broker: LocalBroker | ContainerBroker, clickhouse_dsn: str
) -> None:
    migrate(connect(clickhouse_dsn))
    dated = json.dumps({"event_type": "old", "timestamp": RECEIVED_MS - 3 * 365 * DAY_MS}).encode()  # id derived
    first, second = wrapped(1), wrapped(2)  # no id, no time
    messages = [("events/", first), ("events/", second), ("events/old", dated)]
    with running_worker(settings_for(broker.url, clickhouse_dsn)) as run:
        assert publish_raw(broker.url, messages) == 3
        wait_until(lambda: run.reader.count_dead_letters() == 3, what="three dead letters")
    api = admin_client(clickhouse_dsn, **RELAXED)
    ids = {item["payload"]: item["dead_letter_id"] for item in walk(api, "/dead-letters")}

    with running_worker(settings_for(broker.url, clickhouse_dsn, **RELAXED)) as run:
        # The message again over MQTT first, then the replay of its letter; then the other way round.
        assert publish_raw(broker.url, [("events/", first), ("events/old", dated)]) == 2
        wait_until(lambda: run.reader.count_events() == 2, what="the two messages stored by the worker")
        assert post(api, {"ids": [ids[first.decode()], ids[dated.decode()]]})["stored"] == 2
        assert post(api, {"ids": [ids[second.decode()]]})["stored"] == 1
        assert publish_raw(broker.url, [("events/", second)]) == 1
        wait_until(lambda: run.metric("eventpipe_events_stored_total") == 3, what="the last message stored")

    listed = list(walk(api, "/events"))
    assert len(listed) == len({item["event_id"] for item in listed}) == 3, listed
    assert api.get("/stats/event-types", headers=AUTH).json()["total"] == 3


def test_a_letter_whose_event_is_older_than_the_retention_now_is_not_replayed(
    clickhouse_dsn: str, writer: Writer
) -> None:
    import time

    # Received 20 days ago, its event 25 days older still: within 30 days of its receipt, but 45 days
    # old now, so the TTL would drop it as it was stored, and the replay would report it replayed.
    now = time.time_ns() // 1_000_000
    received = now - 20 * DAY_MS
    body = json.dumps({"event_id": "old-1", "timestamp": received - 25 * DAY_MS}).encode()
    writer.insert_dead_letters([letter("events/x", body, received, Limits(max_past_ms=DAY_MS))])
    answer = post(admin_client(clickhouse_dsn, retention_days=30))
    assert (answer["stored"], answer["still_failing"]) == (0, 1), answer
    assert answer["failures"][0]["reason"] == "invalid_timestamp"
    assert "past the retention (EVENTPIPE_RETENTION_DAYS)" in answer["failures"][0]["detail"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    """A ClickHouse server's HTTP interface (tests/support/clickhouse_http.py), with its cap on a bound value."""
    with migrated(tmp_path / "clickhouse") as running:
        yield running


def test_a_replay_of_thousands_of_small_letters_on_a_server_stores_them(server: ClickHouseHttp) -> None:
    # The ids of a call's letters (up to 10,000, 390 KB) went in one bound value, over a server's 128 KiB
    # cap on one: past about 3,400 letters due, every call answered 503 and nothing was replayed.
    writer = Writer(connect(server.dsn))
    writer.insert_dead_letters([letter("events/purchase", late(i), RECEIVED_MS + i) for i in range(5000)])
    relaxed = admin_client(server.dsn, **RELAXED)
    answer = post(relaxed)
    assert (answer["examined"], answer["stored"], answer["still_failing"], answer["remaining"]) == (5000, 5000, 0, 0)
    assert Reader(connect(server.dsn)).count_events() == 5000


def test_a_replay_by_ids_too_long_for_one_bound_value_on_a_server_takes_those_named(server: ClickHouseHttp) -> None:
    writer = Writer(connect(server.dsn))
    writer.insert_dead_letters([letter("events/purchase", late(i), RECEIVED_MS + i) for i in range(5)])
    relaxed = admin_client(server.dsn, **RELAXED)
    ids = [item["dead_letter_id"] for item in walk(relaxed, "/dead-letters", limit=100)][:3]
    # 1,000 ids of 64 characters in a body under its 128 KiB limit, 167 KB as one bound value: 4 bytes a
    # character in UTF-8, and a quote escaped. No letter has such an id, but the call took the real ones.
    named = ids + [f"{i:03}" + "\U0001f600" * 20 + "'" * 41 for i in range(997)]
    answer = post(relaxed, {"ids": named})
    assert (answer["examined"], answer["stored"], answer["remaining"]) == (3, 3, 0)
    assert post(relaxed)["stored"] == 2


def test_a_letter_the_store_refuses_with_an_unknown_error_fails_alone_and_the_rest_are_stored(
    clickhouse_dsn: str, writer: Writer
) -> None:
    # A row the store fails with an error it does not classify (here a CHECK's throwIf) failed its whole
    # chunk at every call, and letters go oldest first: no replay ever got past it (found by a review).
    writer.insert_dead_letters([letter("events/purchase", late(i), RECEIVED_MS + i) for i in range(5)])
    connect(clickhouse_dsn).command(
        "ALTER TABLE events ADD CONSTRAINT poison CHECK throwIf(ifNull(user_id, '') = 'u0', 'poison row') = 0"
    )
    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    answer = post(relaxed)
    assert (answer["examined"], answer["stored"], answer["still_failing"]) == (5, 4, 1), answer
    assert answer["failures"][0]["reason"] == "storage_rejected" and "poison row" in answer["failures"][0]["detail"]
    assert sorted(item["user_id"] for item in walk(relaxed, "/events")) == ["u1", "u2", "u3", "u4"]
    assert statuses(relaxed) == {"pending": 0, "failed": 1, "replayed": 4}


def test_a_store_that_fails_every_letter_with_an_unknown_error_marks_none_failed(
    clickhouse_dsn: str, writer: Writer
) -> None:
    # Isolating rows is for a poison letter: a store that fails a known-good row too is an outage, 503.
    writer.insert_dead_letters([letter("events/purchase", late(i), RECEIVED_MS + i) for i in range(5)])
    client = connect(clickhouse_dsn)
    client.command("ALTER TABLE events ADD CONSTRAINT broken CHECK throwIf(1, 'broken setup') = 0")
    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    assert relaxed.post("/admin/dead-letters/replay", headers=ADMIN).status_code == 503
    assert statuses(relaxed) == {"pending": 5, "failed": 0, "replayed": 0}
    client.command("ALTER TABLE events DROP CONSTRAINT broken")
    assert post(relaxed)["stored"] == 5


def test_a_blip_of_the_store_stores_every_letter_and_marks_none_failed(clickhouse_dsn: str, writer: Writer) -> None:
    # For two seconds the store refuses the letters' rows (they have users) and takes the known-good one
    # (it has none): isolated at the first error, every letter was marked failed, and no later replay takes
    # a failed letter again (a review). A replay waits for the error to repeat, as the worker does.
    writer.insert_dead_letters([letter("events/purchase", late(i), RECEIVED_MS + i) for i in range(5)])
    client = connect(clickhouse_dsn)
    until = int(client.command("SELECT toUnixTimestamp(now())")) + 2
    client.command(
        f"ALTER TABLE events ADD CONSTRAINT blip CHECK throwIf(toUnixTimestamp(now()) < {until} "
        "AND user_id IS NOT NULL, 'a blip') = 0"
    )
    relaxed = admin_client(clickhouse_dsn, **RELAXED)
    answer = post(relaxed)
    assert (answer["examined"], answer["stored"], answer["still_failing"]) == (5, 5, 0), answer
    assert statuses(relaxed) == {"pending": 0, "failed": 0, "replayed": 5}
