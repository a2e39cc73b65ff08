"""Readiness: /readyz tells a ClickHouse that refuses the API from one that does not answer, and logs why."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.api.source import open_reader
from eventpipe.store.client import connect
from eventpipe.store.database import create, named_database
from eventpipe.store.migration import migrate
from eventpipe.store.reader import Reader
from tests.support.api import AUTH, KEY
from tests.support.gateway import Gateway, gateway


def test_readiness_tells_a_refusal_from_an_outage_and_logs_its_cause_once(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, every failure was "ClickHouse does not answer", a passing outage by its words, and its cause
    # was logged nowhere: a wrong password or a dropped database looked like a slow server. The cause names
    # the setting to fix: ClickHouse's own words name neither the DSN nor its variable.
    migrate(connect(clickhouse_dsn))
    reader = open_reader(clickhouse_dsn, 10, "EVENTPIPE_CLICKHOUSE_DSN")
    api = TestClient(create_app(reader, CollectorRegistry(), [KEY]), raise_server_exceptions=False)
    assert api.get("/readyz").json() == {"status": "ready"}
    found = named_database(clickhouse_dsn)
    server = found[0] if found else clickhouse_dsn.partition("?")[0]
    admin = connect(server)
    database = str(connect(clickhouse_dsn).command("SELECT currentDatabase()"))
    admin.command(f"DROP DATABASE {database}")  # what the API's user meets with a wrong database or password
    try:
        with caplog.at_level(logging.INFO, logger="eventpipe"):
            answers = [api.get("/readyz") for _ in range(3)]
            assert {answer.status_code for answer in answers} == {503}
            assert answers[0].json()["error"] == "refused", answers[0].text
            assert "refuses the API's queries" in answers[0].json()["detail"]
            causes = [record.getMessage() for record in caplog.records if "does not answer" in record.getMessage()]
            assert len(causes) == 1 and "UNKNOWN_DATABASE" in causes[0], causes
            assert "set by EVENTPIPE_CLICKHOUSE_DSN" in causes[0], causes
        create(admin, database)
        unmigrated = api.get("/readyz")
        assert unmigrated.status_code == 503, "a database without its tables serves nothing"
        # `eventpipe api` on a store never migrated: the answer named user, password and database only.
        assert "not migrated" in unmigrated.json()["detail"] and "eventpipe migrate" in unmigrated.json()["detail"]
        # And every read says so: the all-time counts came from the parts list alone, and an empty one
        # answered 200 with no event, as if the store held none.
        for path in ("/events?limit=1", "/stats/event-types", "/stats/timeseries", "/feed?limit=1"):
            answer = api.get(path, headers=AUTH)
            assert (answer.status_code, answer.json()["error"]) == (500, "storage_error"), (path, answer.text)
        migrate(connect(clickhouse_dsn))
        with caplog.at_level(logging.INFO, logger="eventpipe"):
            assert api.get("/readyz").status_code == 200
        assert "ClickHouse answers the API's queries again" in caplog.text
    finally:
        create(admin, database)


def over(server: Gateway) -> TestClient:
    """The API over `server`, as `eventpipe api` opens it."""
    return TestClient(
        create_app(Reader(connect(server.dsn)), CollectorRegistry(), [KEY]), raise_server_exceptions=False
    )


def test_a_proxy_s_502_is_an_outage_clients_retry() -> None:
    # Before, a 502 from a proxy in front of ClickHouse (no ClickHouse error code) was taken for a refusal:
    # 500 storage_error on every read, and /readyz said the API's user or password was wrong.
    with gateway() as server:
        api = over(server)
        server.answer = 502
        for path in ("/events?limit=1", "/stats/event-types", "/dead-letters"):
            answer = api.get(path, headers=AUTH)
            assert (answer.status_code, answer.json()["error"]) == (503, "unavailable"), (path, answer.text)
            assert answer.headers["Retry-After"] == "5"
        ready = api.get("/readyz")
        assert (ready.status_code, ready.json()["error"]) == (503, "unavailable"), ready.text


@pytest.mark.parametrize(("answer", "error"), [(502, "unavailable"), (401, "refused")])
def test_readiness_503_says_when_to_ask_again_as_the_openapi_document_does(answer: int, error: str) -> None:
    # Before, /readyz's 503s had no Retry-After, though /openapi.json promises it on every 503.
    with gateway() as server:
        api = over(server)
        promised = api.get("/openapi.json").json()["paths"]["/readyz"]["get"]["responses"]["503"]
        assert "Retry-After" in promised["headers"]
        server.answer = answer
        ready = api.get("/readyz")
        assert (ready.status_code, ready.json()["error"]) == (503, error), ready.text
        assert int(ready.headers["Retry-After"]) > 0
        # The document named `busy`, which /readyz never answers, and not `refused`, which it does.
        assert f"`{error}`" in promised["description"] and "`busy`" not in promised["description"], promised


def test_a_read_with_no_window_to_narrow_cut_by_the_server_s_time_is_an_outage_not_the_client_s_fault() -> None:
    # Before, ClickHouse's TIMEOUT_EXCEEDED (159: a profile's max_execution_time) on reads README says are never
    # cut (dead letters, all-time counts, the feed, the export) got 422 too_costly "narrow it with since and
    # until", which a client cannot do there.
    with gateway() as server:
        api = over(server)
        server.answer, server.code = 500, 159
        for path in ("/dead-letters", "/stats/event-types"):
            answer = api.get(path, headers=AUTH)
            assert (answer.status_code, answer.json()["error"]) == (503, "unavailable"), (path, answer.text)
            assert int(answer.headers["Retry-After"]) > 0
        costly = api.get("/events?limit=1", headers=AUTH)  # a page the client can narrow: still its to narrow
        assert (costly.status_code, costly.json()["error"]) == (422, "too_costly"), costly.text
