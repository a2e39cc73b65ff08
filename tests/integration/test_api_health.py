"""Readiness: /readyz tells a ClickHouse that refuses the API from one that does not answer, and logs why."""

from __future__ import annotations

import logging

import pytest

from eventpipe.store.client import connect
from eventpipe.store.database import create, named_database
from eventpipe.store.migration import migrate
from tests.support.api import api_client


def test_readiness_tells_a_refusal_from_an_outage_and_logs_its_cause_once(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, every failure was "ClickHouse does not answer", a passing outage by its words, and its cause
    # was logged nowhere: a wrong password or a dropped database looked like a slow server.
    migrate(connect(clickhouse_dsn))
    api = api_client(clickhouse_dsn)
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
        create(admin, database)
        assert api.get("/readyz").status_code == 503, "a database without its tables serves nothing"
        migrate(connect(clickhouse_dsn))
        with caplog.at_level(logging.INFO, logger="eventpipe"):
            assert api.get("/readyz").status_code == 200
        assert "ClickHouse answers the API's queries again" in caplog.text
    finally:
        create(admin, database)
