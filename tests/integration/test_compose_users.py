"""The compose ClickHouse server's users for the API and its /admin/ routes, each doing what its code does.

Every other test on the server connects as the migrator (GRANT ALL), so the grants of eventpipe_admin and
eventpipe_api in clickhouse/users.d were never run: 26.3 refused every erasure with ACCESS_DENIED (its
lightweight DELETE is checked as ALTER UPDATE of the row mask, ClickHouse #90754). Needs Docker (the
compose `clickhouse` service as a test container); skipped without it, since the embedded engine has no users.
"""

from __future__ import annotations

import time

import pytest

from eventpipe.events import Event
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.erasure import Eraser
from eventpipe.store.migration import migrate
from eventpipe.store.query import EventFilter
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer
from tests.support.services import ClickHouseServer, use_docker

ADMIN = ("api", "EVENTPIPE_ADMIN_CLICKHOUSE_DSN")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> ClickHouseServer:
    if not use_docker():
        pytest.skip("needs the compose ClickHouse server (Docker): the embedded engine has no users")
    found: ClickHouseServer = request.getfixturevalue("clickhouse_server")
    found.reset()
    migrate(connect(found.dsn("migrate")))
    return found


def test_the_admin_user_erases_a_user(server: ClickHouseServer) -> None:
    now = time.time_ns() // 1_000_000
    Writer(connect(server.dsn("ingest-worker"))).insert_events(
        [Event("e-1", "click", now - 1000, now - 1000, "user-1", "events/click", "{}")]
    )
    assert Eraser(connect(server.dsn(*ADMIN))).erase("user-1").events == 1
    assert Reader(connect(server.dsn("api"))).events(EventFilter(), 10) == []


def test_the_admin_user_takes_and_lists_a_backup(server: ClickHouseServer) -> None:
    admin = connect(server.dsn(*ADMIN))
    taken = Backups(admin).take("test")
    assert taken.name in [backup.name for backup in Backups(admin).listing()]


def test_the_api_user_answers_the_readiness_probe(server: ClickHouseServer) -> None:
    assert Reader(connect(server.dsn("api")), 10.0).ping() is None
